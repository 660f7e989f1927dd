"""Starting a federated run: Flower's simulation (every site a partition of one dataset, on this
machine), or a real deployment on localhost (one SuperLink and one SuperNode process per site,
talking HTTP, exactly the processes a consortium runs on its machines), started and stopped here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from liteseg.errors import LiteSegError
from liteseg.federated.config import ERROR_NAME, FederatedConfig

FLOWER_EXTRA = "pip install 'liteseg[federated]'"
APP_PUBLISHER = "liteseg"


def require_flower() -> None:
    """Raise a clear error when the optional `flwr` package is missing."""
    try:
        import flwr  # noqa: F401
    except ImportError:
        raise LiteSegError(f"federated training needs Flower: {FLOWER_EXTRA}") from None


def _outcome(config: FederatedConfig) -> Path:
    """The card the run wrote, or the server's error as a LiteSegError."""
    output = Path(config.output)
    error = output / ERROR_NAME
    if error.is_file():
        raise LiteSegError(f"federated run failed: {error.read_text().strip()}")
    card = output / f"{config.name}.json"
    if not card.is_file():
        raise LiteSegError(f"federated run ended without a model card in {output} (see Flower's log above)")
    return card


def simulate(config: FederatedConfig) -> Path:
    """Flower's simulation: one virtual site per share of `config.site_shares`, one at a time on
    this machine's CPUs (Ray backend). Returns the model card's path."""
    require_flower()
    config.check()
    from flwr.simulation import run_simulation

    from liteseg.federated.apps import make_client_app, make_server_app

    cpus = os.cpu_count() or 1
    run_simulation(
        server_app=make_server_app(config), client_app=make_client_app(config),
        num_supernodes=len(config.site_shares),
        # address "local": a Ray instance of this run's own, never one another run started
        backend_config={"client_resources": {"num_cpus": cpus, "num_gpus": 0.0},
                        "init_args": {"num_cpus": cpus, "address": "local"}},
    )
    return _outcome(config)


@dataclass(frozen=True)
class SiteSpec:
    """One SuperNode: its name, dataset and, for a shared dataset, its partition of `partitions`."""

    name: str
    dataset: Path
    partition: Optional[int] = None
    partitions: int = 0

    def node_config(self) -> str:
        """The `--node-config` of its SuperNode."""
        config = f"site={json.dumps(self.name)} dataset={json.dumps(str(self.dataset))}"
        if self.partition is not None:
            config += f" partition-id={self.partition} num-partitions={self.partitions}"
        return config


def write_app(folder: Path, config: FederatedConfig) -> Path:
    """A Flower app folder whose components are liteseg's apps, with `config` as its run config
    (what `flwr run` sends to the SuperLink)."""
    folder.mkdir(parents=True, exist_ok=True)
    values = "\n".join(f"{key} = {json.dumps(value)}" for key, value in config.to_run_config().items())
    (folder / "pyproject.toml").write_text(f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "liteseg-federated"
version = "1.0.0"
description = "LiteSeg federated training of a 2D segmentation network (the components live in the installed liteseg)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "{APP_PUBLISHER}"

[tool.flwr.app.components]
serverapp = "liteseg.federated.apps:server_app"
clientapp = "liteseg.federated.apps:client_app"

[tool.flwr.app.config]
{values}
""")
    return folder


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise LiteSegError(f"the SuperLink stopped at start (exit {process.returncode}); its log: {log}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise LiteSegError(f"the SuperLink did not listen on port {port} within {seconds:g} s; its log: {log}")


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(processes: Sequence[subprocess.Popen]) -> None:
    """End each process with everything it started (its own session): SIGTERM, then SIGKILL to
    whatever is left after 10 s (e.g. a ClientApp process its SuperNode left behind)."""
    for process in processes:
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in processes:
        while _group_alive(process.pid) and time.monotonic() < deadline:
            process.poll()  # reaps the leader once it exits
            time.sleep(0.1)
        if _group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class LocalDeployment:
    """One SuperLink and one SuperNode per site on localhost, in a work folder holding Flower's
    home (`config.toml`), the app folder and every process's log; a context manager that stops
    them all. `stop_site` ends one site's SuperNode (a site dropping out)."""

    def __init__(self, sites: Sequence[SiteSpec], work: Optional[Path] = None) -> None:
        require_flower()
        self.sites = list(sites)
        self.work = Path(work) if work else Path(tempfile.mkdtemp(prefix="liteseg-flower-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.env = {**os.environ, "FLWR_HOME": str(self.work / "flwr-home"),
                    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        self.processes: list[subprocess.Popen] = []
        self.nodes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, arguments: list[str]) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "w")
        process = subprocess.Popen([str(Path(sys.executable).parent / arguments[0]), *arguments[1:]], cwd=self.work,
                                   env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.processes.append(process)
        return process

    def __enter__(self) -> "LocalDeployment":
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            f'[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n')
        try:
            link = self._start("superlink", ["flower-superlink", "--insecure", "--port", str(self.port)])
            _wait_for_port(self.port, link, 60, self.work / "superlink.log")
            for site in self.sites:
                self.nodes[site.name] = self._start(site.name, [
                    "flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{self.port}",
                    "--node-config", site.node_config(), "--port", str(_free_port())])
        except BaseException:
            _stop(self.processes)
            raise
        return self

    def __exit__(self, *_exc) -> None:
        _stop(self.processes)

    def stop_site(self, name: str) -> None:
        _stop([self.nodes[name]])

    def run(self, config: FederatedConfig, timeout: Optional[float] = None) -> Path:
        """`flwr run` of liteseg's app with `config`, streaming its log here; the model card's path."""
        config.check()
        app = write_app(self.work / "app", config)
        command = [str(Path(sys.executable).parent / "flwr"), "run", str(app), "local", "--stream"]
        try:
            subprocess.run(command, cwd=self.work, env=self.env, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise LiteSegError(f"the federated run did not end within {timeout:g} s (logs in {self.work})") from None
        return _outcome(config)


def deploy(config: FederatedConfig, sites: Sequence[SiteSpec], work: Optional[Path] = None) -> Path:
    """A run on a localhost deployment of `sites`, every process stopped at the end."""
    with LocalDeployment(sites, work) as deployment:
        return deployment.run(config)
