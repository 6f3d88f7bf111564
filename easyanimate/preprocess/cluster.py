"""Connecting to Ray: a local instance, or a cluster started with `ray start`; and a cluster of several nodes
on this machine (`LocalCluster`) to try a cluster run without one.

Token authentication: Ray 2.60's `ray start` turns it on when `~/.ray/auth_token` exists (a local `ray.init()`
writes one), but `ray.init(address=...)` with an explicit address does not pick the token up by itself: it
fails with `InvalidAuthToken`. `connect` turns token mode on whenever a token is at hand (a driver in token
mode still joins a cluster without authentication), and otherwise says in one line what to set.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import easyanimate

from .config import EngineConfig

TOKEN_HELP = (
    "if the cluster uses token authentication (Ray 2.60's `ray start` turns it on when ~/.ray/auth_token "
    "exists), copy the head's token to ~/.ray/auth_token on this machine or set RAY_AUTH_TOKEN / "
    "RAY_AUTH_TOKEN_PATH"
)


def token_available(env: dict[str, str] | None = None) -> bool:
    """A token in RAY_AUTH_TOKEN, at RAY_AUTH_TOKEN_PATH or at ~/.ray/auth_token (Ray's own search order)."""
    env = os.environ if env is None else env
    if env.get("RAY_AUTH_TOKEN"):
        return True
    home = env.get("HOME") or str(Path.home())
    path = env.get("RAY_AUTH_TOKEN_PATH") or os.path.join(home, ".ray", "auth_token")
    return os.path.isfile(path)


def enable_token_auth() -> None:
    """Token mode for this process and its children. Ray reads RAY_AUTH_MODE into a cached config when it is
    imported, so setting the variable alone is not enough once `ray` is imported: refresh that config too."""
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config

        Config.initialize("")
    except ImportError:  # another Ray layout: the variable alone, read at import
        pass


def runtime_env(cfg: EngineConfig) -> dict:
    """Each task's environment: one codec thread per task (Ray charges one CPU), and on a cluster our package
    shipped from the driver (its dependencies must be installed on every node)."""
    env: dict = {
        "env_vars": {
            "OPENCV_FFMPEG_CAPTURE_OPTIONS": "threads;1",
            "OMP_NUM_THREADS": "1",
        }
    }
    if cfg.ray_address and cfg.ship_code:
        env["py_modules"] = [os.path.dirname(os.path.abspath(easyanimate.__file__))]
    return env


def connect(cfg: EngineConfig) -> None:
    """ray.init for a run: local (`num_cpus` honoured) or the cluster at `cfg.ray_address`."""
    import ray

    if ray.is_initialized():
        return
    common = dict(
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        runtime_env=runtime_env(cfg),
    )
    if not cfg.ray_address:
        ray.init(
            address="local", num_cpus=cfg.num_cpus, **common
        )  # never a `ray start` instance found by chance
        return
    if os.environ.get("RAY_AUTH_MODE") is None and token_available():
        enable_token_auth()
    common.pop("include_dashboard")  # a cluster's own setting
    try:
        ray.init(address=cfg.ray_address, **common)
    except (ConnectionError, RuntimeError) as err:
        chain, e = [], err
        while e is not None:
            chain.append(str(e))
            e = e.__cause__ or e.__context__
        text = " ".join(chain)
        reason = (
            "the cluster refused this driver's token (InvalidAuthToken / missing token)"
            if "auth" in text.lower()
            else (text.strip().splitlines() or [type(err).__name__])[0]
        )
        raise ConnectionError(
            f"cannot join the Ray cluster at {cfg.ray_address}: {reason}; {TOKEN_HELP}"
        ) from err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    """`ray start --head` plus `nodes - 1` nodes joining it, all on 127.0.0.1, each with `cpus` CPUs; stopped
    by process group (never `ray stop`, which would also stop other Ray instances on the machine).

        with LocalCluster(nodes=2, cpus=1) as address:
            python -m easyanimate.preprocess ... --ray-address <address>
    """

    def __init__(
        self, nodes: int = 2, cpus: int = 1, log_dir: str | None = None, env: dict[str, str] | None = None
    ):
        self.nodes, self.cpus, self.log_dir = nodes, cpus, log_dir
        self.env = dict(os.environ if env is None else env)
        if self.env.get("RAY_AUTH_MODE") is None and token_available(self.env):
            # the head turns token auth on by itself when it finds a token; a joining node does not
            self.env["RAY_AUTH_MODE"] = "token"
        self.procs: list[subprocess.Popen] = []
        self.address = f"127.0.0.1:{free_port()}"

    def _start(self, *args: str, name: str) -> None:
        ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
        out = open(os.path.join(self.log_dir, f"{name}.log"), "w") if self.log_dir else subprocess.DEVNULL
        self.procs.append(
            subprocess.Popen(
                [ray_cli, "start", *args, "--node-ip-address", "127.0.0.1", "--num-cpus", str(self.cpus)]
                + ["--block", "--disable-usage-stats"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # its own process group: stopped as one
            )
        )

    def __enter__(self) -> str:
        port = self.address.rsplit(":", 1)[1]
        try:
            self._start("--head", "--port", port, "--include-dashboard", "false", name="head")
            self.wait(1, timeout=60)
            for k in range(1, self.nodes):
                self._start("--address", self.address, name=f"node{k}")
            self.wait(self.nodes, timeout=90)
        except BaseException:  # __exit__ does not run when __enter__ raises: never leave a head behind
            self.stop()
            raise
        return self.address

    def wait(self, nodes: int, timeout: float) -> None:
        """Until `nodes` nodes are alive (asked in a child process: this one stays free to ray.init later)."""
        probe = (
            "import ray,sys; from easyanimate.preprocess.cluster import connect, EngineConfig; "
            "connect(EngineConfig(ray_address=sys.argv[1], ship_code=False)); "
            "print(sum(n['Alive'] for n in ray.nodes()))"
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a Ray node exited while starting (logs: {self.log_dir})")
            res = subprocess.run(
                [sys.executable, "-c", probe, self.address],
                capture_output=True,
                text=True,
                timeout=60,
                env=self.env,
            )
            if res.returncode == 0 and res.stdout.strip().isdigit() and int(res.stdout.strip()) >= nodes:
                return
            time.sleep(1)
        raise TimeoutError(f"{nodes} Ray nodes not up after {timeout:.0f} s (logs: {self.log_dir})")

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        """SIGTERM (nodes drain), then SIGKILL to whatever of each group is left (raylets can linger)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for p in reversed(self.procs):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 5.0
            for p in self.procs:
                try:
                    p.wait(max(0.1, deadline - time.time()))
                except subprocess.TimeoutExpired:
                    pass
