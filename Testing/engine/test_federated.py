"""Federated training on Flower: sites cut by patient, the global model checked at every site, a
simulation and a real localhost deployment (SuperLink, one SuperNode per site) end to end, with
the traffic measured, a site that drops out, a site without data and sites of another model."""

from __future__ import annotations

import os
import time
import tomllib
from pathlib import Path
from threading import Thread

import pytest
import torch

from liteseg.errors import LiteSegError
from liteseg.evaluation.slices import held_out_patients
from liteseg.federated.config import FederatedConfig
from liteseg.federated.local import global_network
from liteseg.federated.sites import partition_sites, share_counts
from liteseg.io.modelcard import ModelCard
from liteseg.models import build_model
from liteseg.segmentation.inference import load_model
from liteseg.training.datasets import Case, split_by_patient
from liteseg.training.slice_dataset import cases_from_slice_dataset
from test_slice_dataset import synthetic_slices, write_dataset


def cases(patients: int, negatives: int = 0) -> list[Case]:
    listed = [Case(f"P{i:02d}", Path(f"p{i}.nii.gz"), Path(f"l{i}.nii.gz")) for i in range(patients)]
    return listed + [Case(f"N{i}", Path(f"n{i}.nii.gz"), Path(f"n{i}.nii.gz"), train_only=True) for i in range(negatives)]


def test_the_run_config_is_flat_and_reads_back_to_the_same_options():
    config = FederatedConfig(dataset="/d/s.json", output="/o", site_shares=(5, 5, 1), foreground_prior=0.01,
                             window=(0, 200), label_values=(1, 2), precision="bfloat16", resume=True, notes='a "quote"', server_lr=3.0)
    run_config = config.to_run_config()
    assert all(isinstance(v, (str, int, float, bool)) for v in run_config.values())
    assert run_config["site-shares"] == "5 5 1" and run_config["foreground-prior"] == 0.01
    assert FederatedConfig.from_run_config(run_config) == config
    assert FederatedConfig.from_run_config({**run_config, "foreground-prior": ""}).foreground_prior is None
    with pytest.raises(LiteSegError, match="lacks output"):
        FederatedConfig.from_run_config({"dataset": "/d"})
    with pytest.raises(LiteSegError, match="site shares must be positive"):
        FederatedConfig(dataset="d", output="o", site_shares=(1, 0)).check()
    with pytest.raises(LiteSegError, match="needs a 2D network"):
        FederatedConfig(dataset="d", output="o", network="lowres").check()
    with pytest.raises(LiteSegError, match="server learning rate must be positive"):
        FederatedConfig(dataset="d", output="o", server_lr=0).check()


def test_sites_hold_the_centralised_held_out_patients_and_disjoint_training_patients():
    listed = cases(40, negatives=3)
    _, centralised_val = split_by_patient(listed, 0.2, 0)
    for shares, expected in (((1, 1, 1), [12, 12, 11]), ((5, 5, 1), [16, 16, 3])):
        sites = partition_sites(listed, Path("d.json"), shares, seed=0, val_fraction=0.2)
        train = [{c.patient for c in s.train_cases} for s in sites]
        val = [{c.patient for c in s.val_cases} for s in sites]
        assert [len(t) for t in train] == expected and sum(map(len, train)) == 35
        assert set().union(*val) == {c.patient for c in centralised_val}
        assert all(not (a & b) for i, a in enumerate(train + val) for b in (train + val)[i + 1:])
    assert share_counts(10, (5, 5, 1)) == [5, 4, 1] and share_counts(7, (1, 1, 1)) == [3, 2, 2]
    with pytest.raises(LiteSegError, match="site 2 of 3 gets no training patient"):
        partition_sites(cases(6), Path("d.json"), (10, 10, 1), seed=0, val_fraction=0.2)


def test_a_global_model_of_another_network_is_refused_with_the_reason():
    config = FederatedConfig(dataset="d", output="o", network="monet")
    state = build_model("monet", out_channels=1).state_dict()
    loaded = global_network(config, state, "site-a")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    with pytest.raises(LiteSegError, match=r"site site-a: the global model does not fit this site's monet .*missing"):
        global_network(config, build_model("unet16", out_channels=1).state_dict(), "site-a")
    reshaped = {**state, "head.weight": torch.zeros(3)} if "head.weight" in state else {
        k: (torch.zeros(3) if i == 0 else v) for i, (k, v) in enumerate(state.items())}
    with pytest.raises(LiteSegError, match="of another shape"):
        global_network(config, reshaped, "site-a")


flwr = pytest.importorskip("flwr", reason="federated training needs the optional extra: pip install 'liteseg[federated]'")

from liteseg.federated.launch import LocalDeployment, SiteSpec, simulate  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("slices"), synthetic_slices(6, 2, seed=0))


def tiny_config(dataset: Path, output: Path, **options) -> FederatedConfig:
    values = dict(dataset=str(dataset), output=str(output), rounds=2, site_shares=(1, 1), val_fraction=0.34,
                  window=(0, 200), batch_size=4, threads=1, foreground_prior=0.05, command="test")
    return FederatedConfig(**{**values, **options})


@pytest.fixture(scope="module")
def simulated(dataset, tmp_path_factory) -> FederatedConfig:
    config = tiny_config(dataset, tmp_path_factory.mktemp("simulated") / "run")
    simulate(config)
    return config


def test_the_server_step_moves_the_parameters_and_averages_the_batchnorm_statistics():
    from liteseg.federated.rounds import server_step

    torch.manual_seed(0)
    network = build_model("monet", in_channels=1, out_channels=1)
    current = {k: v.clone() for k, v in network.state_dict().items()}
    averaged = {k: (v + 0.5 if v.is_floating_point() else v + 2) for k, v in current.items()}
    assert all(torch.equal(server_step(network, averaged, 1.0)[k], averaged[k]) for k in averaged)
    stepped = server_step(network, averaged, 3.0)
    parameters = dict(network.named_parameters())
    assert parameters and set(stepped) == set(averaged)
    for key, value in stepped.items():
        expected = current[key] + 1.5 if key in parameters else averaged[key]
        assert torch.allclose(value, expected) and value.dtype == current[key].dtype, key
    network.load_state_dict(stepped)  # a loadable state


def test_a_simulation_trains_by_patient_measures_the_traffic_and_writes_a_loadable_card(simulated, dataset):
    card = ModelCard.read(Path(simulated.output) / f"{simulated.name}.json")
    federated = card.data["training"]["federated"]
    assert federated["rounds"] == 2 and federated["sites"] == ["site-0", "site-1"]
    model_bytes = federated["model_bytes"]
    assert model_bytes == sum(t.numel() * t.element_size() for t in build_model("monet", out_channels=1).state_dict().values())
    for entry in federated["traffic"]:  # one model each way per site and round, plus keys and headers
        assert len(entry["sites"]) == 2
        for site in entry["sites"]:
            assert model_bytes < site["sent_bytes"] < 1.02 * model_bytes
            assert model_bytes < site["received_bytes"] < 1.02 * model_bytes
    _, held_out = split_by_patient(cases_from_slice_dataset(dataset), 0.34, 0)
    assert sorted(c["patient"] for c in card.data["validation"]["cases"]) == sorted(c.patient for c in held_out)
    validated = [p for s in card.data["training"]["sites"] for p in s["validation_patients"]]
    assert sorted(validated) == sorted(c.patient for c in held_out)
    assert held_out_patients(card) == sorted(c.patient for c in held_out)  # what `liteseg evaluate --slices` reads
    network, loaded = load_model(card.path)  # checksum verified, like any bundled model
    saved = torch.load(card.weights_path, weights_only=True)
    assert loaded.network == "monet" and all(torch.equal(network.state_dict()[k], saved[k]) for k in saved)


def test_the_final_model_carries_the_batchnorm_statistics_the_sites_recompute_for_it(simulated, dataset):
    from liteseg.federated.local import batchnorm_statistics
    from liteseg.federated.rounds import pooled_statistics

    card = ModelCard.read(Path(simulated.output) / f"{simulated.name}.json")
    averaged = torch.load(Path(simulated.output) / "checkpoint.pt", weights_only=True)["model"]  # after the last round
    saved = torch.load(card.weights_path, weights_only=True)
    sites = partition_sites(cases_from_slice_dataset(dataset), dataset, simulated.site_shares, simulated.seed,
                            simulated.val_fraction)
    recomputed = [batchnorm_statistics(simulated, site, global_network(simulated, averaged, site.name)) for site in sites]
    expected = pooled_statistics([statistics for statistics, _ in recomputed], [batches for _, batches in recomputed])
    assert expected and all(key.endswith(("running_mean", "running_var")) for key in expected)
    for key, value in saved.items():
        if key in expected:
            assert torch.allclose(value, expected[key], atol=1e-6) and not torch.allclose(value, averaged[key]), key
        else:
            assert torch.equal(value, averaged[key]), key  # weights and counters as averaged
    calibration = card.data["training"]["federated"]["batchnorm_statistics"]
    assert calibration["sites"] == ["site-0", "site-1"] and calibration["batches"] == sum(b for _, b in recomputed)
    model_bytes = card.data["training"]["federated"]["model_bytes"]
    assert 2 * model_bytes < calibration["sent_bytes"] < 2.04 * model_bytes  # the final model once more to each site
    assert calibration["received_bytes"] < 0.1 * model_bytes and not calibration["failures"]


def test_recomputed_statistics_are_the_average_over_the_batches_with_dropout_off_and_pool_across_sites():
    from liteseg.federated.local import recompute_batchnorm
    from liteseg.federated.rounds import pooled_statistics

    torch.manual_seed(0)
    network = build_model("monet", in_channels=1, out_channels=1)
    momenta = [m.momentum for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    batches = [torch.rand(2, 1, 32, 32) * (1 + i) for i in range(5)]
    assert recompute_batchnorm(network, batches[:1]) == 1
    first = network.enc0[0][1]  # the first BatchNorm: its input is the first convolution's output
    with torch.no_grad():
        features = network.enc0[0][0](batches[0])
    assert torch.allclose(first.running_mean, features.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(first.running_var, features.var(dim=(0, 2, 3)), rtol=1e-4)  # unbiased, as BatchNorm keeps it
    again = {k: v.clone() for k, v in network.state_dict().items()}
    recompute_batchnorm(network, batches[:1])
    assert all(torch.equal(again[k], v) for k, v in network.state_dict().items())  # deterministic: dropout off
    assert not network.training and [m.momentum for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d)] == momenta
    statistics = []
    for part in (batches[:2], batches[2:]):  # two sites
        recompute_batchnorm(network, part)
        statistics.append({k: v.clone() for k, v in network.state_dict().items() if k.endswith(("running_mean", "running_var"))})
    recompute_batchnorm(network, batches)
    pooled = pooled_statistics(statistics, [2, 3])
    assert all(torch.allclose(pooled[k], network.state_dict()[k], rtol=1e-4, atol=1e-6) for k in pooled)
    assert not torch.allclose(pooled["enc0.0.1.running_var"], statistics[0]["enc0.0.1.running_var"])


def test_a_resumed_simulation_continues_the_rounds_and_refuses_changed_options(simulated):
    history = ModelCard.read(Path(simulated.output) / f"{simulated.name}.json").data["training"]["history"]
    with pytest.raises(LiteSegError, match="already holds"):
        simulate(simulated)
    with pytest.raises(LiteSegError, match="options changed since the checkpoint: lr"):
        simulate(FederatedConfig(**{**simulated.__dict__, "resume": True, "lr": 1e-3}))
    with pytest.raises(LiteSegError, match="holds 2 rounds already, more than the 1 asked for"):
        simulate(FederatedConfig(**{**simulated.__dict__, "resume": True, "rounds": 1}))
    card = ModelCard.read(simulate(FederatedConfig(**{**simulated.__dict__, "resume": True, "rounds": 3})))
    resumed = card.data["training"]["history"]
    assert [h["round"] for h in resumed] == [1, 2, 3] and resumed[:2] == history


def simulate_apps(server: FederatedConfig, sites: FederatedConfig, num_sites: int) -> None:
    """A simulation whose server and sites run with different options."""
    from flwr.simulation import run_simulation

    from liteseg.federated.apps import make_client_app, make_server_app

    run_simulation(server_app=make_server_app(server), client_app=make_client_app(sites), num_supernodes=num_sites,
                   backend_config={"client_resources": {"num_cpus": 1}, "init_args": {"num_cpus": 1, "address": "local"}})


def test_sites_of_another_model_version_fail_the_run_with_their_reason(dataset, tmp_path):
    server = tiny_config(dataset, tmp_path / "run", rounds=1)
    with pytest.raises(LiteSegError, match="round 1: no site returned a model"):
        simulate_apps(server, FederatedConfig(**{**server.__dict__, "network": "unet16"}), 2)
    error = (tmp_path / "run" / "federated_error.txt").read_text()
    assert error.count("the global model does not fit this site's unet16") == 2
    assert not (tmp_path / "run" / f"{server.name}.json").exists()


def test_too_few_connected_sites_stop_the_run_after_the_connect_timeout(dataset, tmp_path):
    config = tiny_config(dataset, tmp_path / "run", min_sites=3, connect_timeout=2)
    started = time.monotonic()
    with pytest.raises(LiteSegError, match="only 2 of the 3 sites needed are connected after 2 s"):
        simulate_apps(config, config, 2)
    assert time.monotonic() - started < 120
    assert "only 2 of the 3" in (tmp_path / "run" / "federated_error.txt").read_text()


def test_the_app_folder_carries_the_options_of_the_command(tmp_path, dataset, capsys):
    from liteseg.cli.main import main

    assert main(["federated", "app", str(dataset), "--output", str(tmp_path / "server"), "--app-dir", str(tmp_path / "app"),
                 "--site-shares", "5", "5", "1", "--rounds", "4", "--window", "0", "200", "--notes", 'a "quoted" note']) == 0
    assert f"flwr run {tmp_path / 'app'}" in capsys.readouterr().out
    project = tomllib.loads((tmp_path / "app" / "pyproject.toml").read_text())
    assert project["tool"]["flwr"]["app"]["components"] == {"serverapp": "liteseg.federated.apps:server_app",
                                                            "clientapp": "liteseg.federated.apps:client_app"}
    config = FederatedConfig.from_run_config(project["tool"]["flwr"]["app"]["config"])
    assert config.site_shares == (5, 5, 1) and config.rounds == 4 and config.window == (0, 200) and config.min_sites == 3
    assert config.notes == 'a "quoted" note' and config.output == str(tmp_path / "server") and config.dataset == str(dataset)


def wait_for_file(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"no {path} after {seconds} s"
        time.sleep(0.2)


def test_a_localhost_deployment_runs_through_a_site_without_data_and_one_that_drops_out(dataset, tmp_path):
    # round_timeout: a site's first reply starts a ClientApp process (torch, Flower, its data): 30 s
    # was too short on a 2-core AVX2 machine running other jobs
    config = tiny_config(dataset, tmp_path / "run", rounds=3, round_timeout=120, connect_timeout=60, min_sites=2)
    sites = [SiteSpec("site-0", dataset, 0, 2), SiteSpec("site-1", dataset, 1, 2),
             SiteSpec("site-2", missing := tmp_path / "missing.json")]
    started = time.monotonic()
    with LocalDeployment(sites, tmp_path / "work") as deployment:
        outcome: dict = {}
        thread = Thread(target=lambda: outcome.update(card=deployment.run(config, timeout=600)))
        thread.start()
        wait_for_file(tmp_path / "run" / "checkpoint.pt", 300)  # the server has finished round 1
        deployment.stop_site("site-1")  # a hospital that goes offline after its first round
        thread.join(timeout=600)
    assert "card" in outcome, "the run did not end"
    for process in deployment.processes:  # every process stopped, with the ClientApp processes they started
        with pytest.raises(ProcessLookupError):
            os.killpg(process.pid, 0)
    assert time.monotonic() - started < 700  # connecting and round 1, then at most one round timeout per round
    card = ModelCard.read(outcome["card"])
    history = card.data["training"]["history"]
    assert [sorted(s["site"] for s in h["sites"]) for h in history] == [["site-0", "site-1"], ["site-0"], ["site-0"]]
    assert all(any(f.startswith("node ") and f.endswith(f"site site-2: cannot read its data: dataset not found: {missing}")
                   for f in h["failures"]) for h in history)
    assert {c["site"] for c in card.data["validation"]["cases"]} == {"site-0"}
    calibration = card.data["training"]["federated"]["batchnorm_statistics"]  # by the sites still there
    assert calibration["sites"] == ["site-0"] and calibration["batches"] > 0
    assert any(f.endswith(f"cannot read its data: dataset not found: {missing}") for f in calibration["failures"])
    assert (tmp_path / "work" / "app" / "pyproject.toml").read_text().count('"liteseg.federated.apps:') == 2
