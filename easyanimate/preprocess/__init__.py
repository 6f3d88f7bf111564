"""Raw videos -> a "normal"-format dataset: scene split, filters, captioning, on Ray Data."""
