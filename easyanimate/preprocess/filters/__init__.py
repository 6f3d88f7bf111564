"""Clip filters; each returns scores that go into the clip's record, and a keep / drop decision."""
