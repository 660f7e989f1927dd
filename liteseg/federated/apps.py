"""The Flower apps: a ClientApp run by every site's SuperNode and the ServerApp run by the
SuperLink. Deployed, both read their options from the run config (`[tool.flwr.app.config]`, see
`launch`), the sites their data from their node config (`dataset`, optionally `site`, and
`partition-id`/`num-partitions` for one partition of a shared dataset); the simulation builds them
with the options directly.
"""

from __future__ import annotations

from logging import INFO
from pathlib import Path
from typing import Optional

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from torch import nn

from liteseg.errors import LiteSegError
from liteseg.federated.config import ERROR_NAME, FederatedConfig
from liteseg.federated.local import batchnorm_statistics, global_network, round_seed, site_of, train_site, validate_site
from liteseg.federated.rounds import Server
from liteseg.federated.sites import Site


def _options(config: Optional[FederatedConfig], context: Context) -> FederatedConfig:
    return config if config is not None else FederatedConfig.from_run_config(context.run_config)


def _site_record(site: Site, results: list[dict]) -> ConfigRecord:
    return ConfigRecord({
        "name": site.name,
        "training-patients": len({c.patient for c in site.train_cases}),
        "patients": [r["patient"] for r in results],
        "dice": [float(r["dice"]) for r in results],
    })


def _global_model(config: Optional[FederatedConfig], message: Message,
                  context: Context) -> tuple[FederatedConfig, Site, nn.Module]:
    """What every message starts with at a site: the options, the site and the global model it
    carries (checked)."""
    options = _options(config, context)
    site = site_of(options, context.node_config)
    return options, site, global_network(options, message.content["arrays"].to_torch_state_dict(), site.name)


def _received(config: Optional[FederatedConfig], message: Message,
              context: Context) -> tuple[FederatedConfig, Site, nn.Module, list[dict]]:
    """`_global_model` and that model's figures on the site's held-out patients."""
    options, site, network = _global_model(config, message, context)
    return options, site, network, validate_site(options, site, network)


def make_client_app(config: Optional[FederatedConfig] = None) -> ClientApp:
    """A site: validates the global model it receives on its held-out patients, then trains it
    for the local epochs on its own slices; after the last round it recomputes the final model's
    BatchNorm statistics on its slices. Only weights, statistics and figures leave it."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        options, site, network, results = _received(config, message, context)
        server_round = int(message.content["config"]["server-round"])
        metrics = train_site(options, site, network, round_seed(options, site.name, server_round))
        log(INFO, "%s: round %d trained on %d slices in %.1f s, loss %.4f", site.name, server_round,
            metrics["num-examples"], metrics["seconds"], metrics["train-loss"])
        content = RecordDict({"arrays": ArrayRecord(network.state_dict()), "metrics": MetricRecord(metrics),
                              "site": _site_record(site, results)})
        return Message(content=content, reply_to=message)

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        _, site, _, results = _received(config, message, context)
        content = RecordDict({"metrics": MetricRecord({"num-examples": len(results)}), "site": _site_record(site, results)})
        return Message(content=content, reply_to=message)

    @app.query()
    def statistics(message: Message, context: Context) -> Message:
        """The BatchNorm statistics of the final model on this site's training slices."""
        options, site, network = _global_model(config, message, context)
        recomputed, batches = batchnorm_statistics(options, site, network)
        log(INFO, "%s: BatchNorm statistics of the final model over %d batches", site.name, batches)
        content = RecordDict({"arrays": ArrayRecord(recomputed), "metrics": MetricRecord({"batches": batches}),
                              "site": ConfigRecord({"name": site.name})})
        return Message(content=content, reply_to=message)

    return app


def make_server_app(config: Optional[FederatedConfig] = None) -> ServerApp:
    """The server: FedAvg rounds, checkpoints, final weights and card (see `rounds`). A failure is
    also written to `<output>/federated_error.txt` for the command that started the run."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        options = _options(config, context)
        error_file = Path(options.output) / ERROR_NAME
        error_file.unlink(missing_ok=True)
        try:
            card = Server(options).run(grid)
        except LiteSegError as error:
            error_file.parent.mkdir(parents=True, exist_ok=True)
            error_file.write_text(error.message + "\n")
            raise
        log(INFO, "model card: %s", card)

    return app


client_app = make_client_app()
server_app = make_server_app()
