"""The server's side of a federated run: Flower's FedAvg samples the sites and averages their
models; this module runs the rounds around it, measures what every message carries, checkpoints
after every round (resumable), fails with a message when no site answers, and writes the final
weights with their model card.

Each round sends the global model once to every sampled site and receives one model back: a site
first validates the model it receives on its own held-out patients (so round r reports the Dice
of the model after round r - 1) and then trains it. After the last round every site recomputes
the final model's BatchNorm statistics on its training slices (the averaged running statistics
lag the averaged weights: with MoNet's momentum of 0.01 they average over about 100 steps, a
whole round), the server pools them, and every site validates that final model once more.
"""

from __future__ import annotations

import pickle
import re
import time
from datetime import datetime, timezone
from logging import INFO, WARNING
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from liteseg import __version__
from liteseg.errors import LiteSegError
from liteseg.federated.config import FederatedConfig
from liteseg.io.modelcard import write_card
from liteseg.models import build_model
from liteseg.models.params import state_dict_bytes
from liteseg.training.runs import output_files, save_atomic
from liteseg.training.trainer import BINARY_OUTPUT, card_header, recipe_description, set_output_prior


def content_bytes(content: RecordDict) -> int:
    """Bytes a message's records carry (array data with their keys, configs, metrics)."""
    return sum(record.count_bytes() for record in content.values())


def error_reason(reason: str) -> str:
    """The message of a site's error reply: "<class 'X'>:<'message'>" (Flower's form) as the message."""
    reason = reason.strip()
    found = re.fullmatch(r"<class '[\w.]+'>:<'(.*)'>", reason, re.DOTALL)
    return (found.group(1) if found else reason).strip().splitlines()[-1]


def wait_for_sites(grid: Grid, config: FederatedConfig) -> None:
    """Return once `min_sites` nodes are connected; an error after `connect_timeout` seconds."""
    deadline = time.monotonic() + config.connect_timeout
    while (connected := len(list(grid.get_node_ids()))) < config.min_sites:
        if time.monotonic() > deadline:
            raise LiteSegError(f"only {connected} of the {config.min_sites} sites needed are connected after "
                               f"{config.connect_timeout:g} s: start the missing sites' SuperNodes, or lower --min-sites")
        time.sleep(0.5)


def server_step(network: torch.nn.Module, averaged: dict[str, torch.Tensor], server_lr: float) -> dict[str, torch.Tensor]:
    """The next global state: trainable parameters move `server_lr` times the averaged update
    (w + lr * (average - w); lr 1 is the average itself), buffers (BatchNorm statistics, batch
    counters) are the average, since extrapolating them could make a variance negative."""
    parameters = dict(network.named_parameters())
    state = {}
    for key, value in averaged.items():
        if key in parameters and server_lr != 1.0:
            current = parameters[key].detach()
            value = current + server_lr * (value.to(current.dtype) - current)
        state[key] = value
    return state


def pooled_statistics(statistics: list[dict[str, torch.Tensor]], batches: list[int]) -> dict[str, torch.Tensor]:
    """The sites' BatchNorm statistics (each a plain average over its `batches`) averaged with
    weights `batches`: what the same recomputation gives over all the sites' batches together."""
    total = sum(batches)
    return {key: sum(n * site[key] for n, site in zip(batches, statistics)) / total for key in statistics[0]}


class Server:
    """The rounds of one run, resumable from `<output>/checkpoint.pt`."""

    def __init__(self, config: FederatedConfig) -> None:
        config.check()
        self.config = config
        self.checkpoint, self.weights, self.card = output_files(Path(config.output), config.name, config.resume)
        self.strategy = FedAvg(fraction_train=config.fraction_train, fraction_evaluate=1.0, min_train_nodes=1,
                               min_evaluate_nodes=1, min_available_nodes=1)
        torch.manual_seed(config.seed)
        self.network = build_model(config.network, **BINARY_OUTPUT)
        if config.foreground_prior is not None:
            set_output_prior(self.network, config.foreground_prior)
        self.history: list[dict] = []
        self.site_names: dict[int, str] = {}
        if config.resume:
            self._restore()

    def _restore(self) -> None:
        if not self.checkpoint.is_file():
            raise LiteSegError(f"nothing to resume: {self.checkpoint} not found")
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
            raise LiteSegError(f"cannot read checkpoint {self.checkpoint}: {str(error).splitlines()[0]}") from None
        changed = self.config.changes_from(state["config"])
        if changed:
            raise LiteSegError(f"cannot resume {self.checkpoint}: options changed since the checkpoint: {'; '.join(changed)}")
        if len(state["history"]) > self.config.rounds:
            raise LiteSegError(f"cannot resume {self.checkpoint}: it holds {len(state['history'])} rounds already, "
                               f"more than the {self.config.rounds} asked for")
        self.network.load_state_dict(state["model"])
        self.history = state["history"]

    def run(self, grid: Grid) -> Path:
        """All remaining rounds, the final validation and the card; returns the card's path."""
        for server_round in range(len(self.history) + 1, self.config.rounds + 1):
            self.history.append(self._train_round(grid, server_round))
            save_atomic({"config": self.config.to_run_config(), "model": self.network.state_dict(),
                         "history": self.history}, self.checkpoint)
        calibration = self._recompute_batchnorm(grid)
        results, failures = self._validate(grid)
        save_atomic({k: v.detach().clone() for k, v in self.network.state_dict().items()}, self.weights)
        return write_card(self.card, self._card(results, failures, calibration))

    def _send(self, grid: Grid, messages: Iterable[Message]) -> tuple[list[Message], list[str], dict[int, int]]:
        """(replies without error, failures in words, bytes sent per node)."""
        messages = list(messages)
        sent = {m.metadata.dst_node_id: content_bytes(m.content) for m in messages}
        replies = list(grid.send_and_receive(messages, timeout=self.config.round_timeout))
        # an error the SuperLink answers for an unreachable node comes from the SuperLink itself:
        # the message it replies to names the node
        destination = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        node_of = {id(r): destination.get(r.metadata.reply_to_message_id, r.metadata.src_node_id) for r in replies}
        failures = [f"{self._name(node_of[id(r)])}: {error_reason(r.error.reason)}" for r in replies if r.has_error()]
        answered = set(node_of.values())
        failures += [f"{self._name(node)}: no reply within {self.config.round_timeout:g} s"
                     for node in sent if node not in answered]
        valid = [r for r in replies if not r.has_error()]
        for reply in valid:
            self.site_names[node_of[id(reply)]] = str(reply.content["site"]["name"])
        return valid, failures, sent

    def _name(self, node: int) -> str:
        return self.site_names.get(node, f"node {node}")

    def _train_round(self, grid: Grid, server_round: int) -> dict:
        started = time.perf_counter()
        wait_for_sites(grid, self.config)
        arrays = ArrayRecord(self.network.state_dict())
        config = ConfigRecord({"server-round": server_round})
        valid, failures, sent = self._send(grid, self.strategy.configure_train(server_round, arrays, config, grid))
        if not valid:
            raise LiteSegError(f"round {server_round}: no site returned a model ({'; '.join(failures) or 'no site sampled'})")
        aggregated, _ = self.strategy.aggregate_train(server_round, valid)
        self.network.load_state_dict(server_step(self.network, aggregated.to_torch_state_dict(), self.config.server_lr))
        sites = [self._site_entry(reply, sent) for reply in valid]
        replied = sum(s["sent_bytes"] for s in sites)
        entry = {
            "round": server_round,
            "sites": sites,
            "failures": failures,
            "sent_bytes_to_failed_sites": sum(sent.values()) - replied,
            "train_loss": float(np.average([s["train_loss"] for s in sites], weights=[s["slices"] for s in sites])),
            "incoming_dice": _pooled_dice(sites),
            "seconds": time.perf_counter() - started,
        }
        log(INFO, "%s", _round_line(entry, self.config.rounds))
        return entry

    def _site_entry(self, reply: Message, sent: dict[int, int]) -> dict:
        metrics, site = reply.content["metrics"], reply.content["site"]
        node = reply.metadata.src_node_id
        return {
            "site": str(site["name"]),
            "training_patients": int(site["training-patients"]),
            "slices": int(metrics["num-examples"]),
            "train_loss": float(metrics["train-loss"]),
            "train_seconds": float(metrics["seconds"]),
            "validation": _site_results(site),
            "sent_bytes": sent[node],
            "received_bytes": content_bytes(reply.content),
        }

    def _recompute_batchnorm(self, grid: Grid) -> dict:
        """Set the global model's BatchNorm statistics to those the connected sites recompute on
        their training slices; with no site answering they stay the average. What happened, for the card."""
        wait_for_sites(grid, self.config)
        content = RecordDict({"arrays": ArrayRecord(self.network.state_dict())})
        messages = [Message(content=content, message_type=MessageType.QUERY, dst_node_id=node) for node in grid.get_node_ids()]
        valid, failures, sent = self._send(grid, messages)
        batches = [int(reply.content["metrics"]["batches"]) for reply in valid]
        outcome = {"sites": sorted(str(r.content["site"]["name"]) for r in valid), "batches": sum(batches),
                   "sent_bytes": sum(sent.values()), "received_bytes": sum(content_bytes(r.content) for r in valid),
                   "failures": failures}
        if not valid:
            log(WARNING, "BatchNorm statistics not recomputed, the averaged ones are kept: %s", "; ".join(failures))
            return outcome
        state = self.network.state_dict()
        state.update(pooled_statistics([reply.content["arrays"].to_torch_state_dict() for reply in valid], batches))
        self.network.load_state_dict(state)
        log(INFO, "BatchNorm statistics recomputed at %d site(s) over %d batches", len(valid), sum(batches))
        return outcome

    def _validate(self, grid: Grid) -> tuple[list[dict], list[str]]:
        """Every connected site's Dice of the final model on its own held-out patients."""
        wait_for_sites(grid, self.config)
        arrays = ArrayRecord(self.network.state_dict())
        messages = self.strategy.configure_evaluate(self.config.rounds, arrays, ConfigRecord(), grid)
        valid, failures, _ = self._send(grid, messages)
        if not valid:
            raise LiteSegError(f"final validation: no site replied ({'; '.join(failures)})")
        results = [dict(r, site=str(reply.content["site"]["name"])) for reply in valid for r in _site_results(reply.content["site"])]
        return results, failures

    def _card(self, results: list[dict], failures: list[str], calibration: dict) -> dict:
        config, recipe = self.config, self.config.recipe()
        last = self.history[-1]
        traffic = [{"round": h["round"], "sites": [{k: s[k] for k in ("site", "sent_bytes", "received_bytes")} for s in h["sites"]]}
                   for h in self.history]
        return {
            **card_header(recipe, self.weights),
            "training": {
                "federated": {
                    "framework": "Flower (flwr), Message API",
                    "strategy": (f"FedAvg weighted by training slices seen, fraction of sites {config.fraction_train:g}, "
                                 f"server learning rate {config.server_lr:g} on the parameters (BatchNorm statistics averaged "
                                 "each round, then recomputed at the sites for the final model)"),
                    "rounds": len(self.history),
                    "local_epochs": config.local_epochs,
                    "sites": sorted({s["site"] for h in self.history for s in h["sites"]}),
                    "site_shares": list(config.site_shares),
                    "model_bytes": state_dict_bytes(self.network.state_dict()),
                    "traffic": traffic,
                    "batchnorm_statistics": {
                        **calibration,
                        "how": ("recomputed on the sites' training slices after the last round (train-mode BatchNorm, "
                                "dropout off, plain average over the batches; pooled by batches)"
                                if calibration["sites"] else "averaged: no site recomputed them"),
                    },
                },
                "sites": _site_descriptions(self.history),
                "validation_data": [{"patient": r["patient"], "site": r["site"]} for r in results],
                "split": f"each site by patient (seed {config.seed}, validation fraction {config.val_fraction:g})",
                "seed": config.seed,
                "recipe": {**recipe_description(recipe),
                           "scheduler": "none: constant lr, a fresh NAdam at every site every round"},
                "history": self.history,
                "device": "cpu",
                "seconds": round(sum(h["seconds"] for h in self.history), 1),
            },
            "validation": {
                "on_training_cases": False,
                "weights": f"global model after round {last['round']} (the last)",
                "cases": results,
                "mean_dice": float(np.mean([r["dice"] for r in results])) if results else None,
                "mean_hd95_mm": None,
                "failures": failures,
            },
            "command": config.command,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "liteseg_version": __version__,
            "notes": config.notes,
        }


def _site_results(site: ConfigRecord) -> list[dict]:
    return [{"patient": p, "dice": float(d)} for p, d in zip(site["patients"], site["dice"])]


def _site_descriptions(history: list[dict]) -> list[dict]:
    """Each site as it last reported: patients trained on, slices per round, held-out patients."""
    latest = {s["site"]: s for entry in history for s in entry["sites"]}
    return [{"site": name, "training_patients": s["training_patients"], "training_slices_per_round": s["slices"],
             "validation_patients": [r["patient"] for r in s["validation"]]} for name, s in sorted(latest.items())]


def _pooled_dice(sites: list[dict]) -> Optional[float]:
    dices = [r["dice"] for s in sites for r in s["validation"]]
    return float(np.mean(dices)) if dices else None


def _round_line(entry: dict, rounds: int) -> str:
    sites = entry["sites"]
    dice = entry["incoming_dice"]
    mb = 1e6
    line = (f"round {entry['round']}/{rounds}: {len(sites)} site(s) trained, loss {entry['train_loss']:.4f}; "
            f"Dice of the incoming model on their held-out patients "
            f"{'n/a' if dice is None else f'{dice:.3f}'}; "
            f"sent {(sum(s['sent_bytes'] for s in sites) + entry['sent_bytes_to_failed_sites']) / mb:.2f} MB, "
            f"received {sum(s['received_bytes'] for s in sites) / mb:.2f} MB; {entry['seconds']:.1f} s")
    if entry["failures"]:
        line += f"; failed: {'; '.join(entry['failures'])}"
    return line
