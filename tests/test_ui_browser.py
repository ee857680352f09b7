"""The stock UIs over a finished sweep, in headless Chromium, served the way `amctl ui` serves them.

MLflow's UI: the sweep's own experiment opens in the machine-learning view; the run tree (sweep > cell >
trials) unfolds; a trial shows its system metrics, a dump image and its logged model; its source names
the git commit.  optuna-dashboard: the cell's study maximises accuracy, with positive values and a
pruned (ASHA-stopped) trial.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import free_port
from mlflow import MlflowClient
from test_report_browser import CHROMIUM, DRIVER, browser

pytestmark = [pytest.mark.ray,
              pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs Debian's chromium and chromium-driver")]

SWEEP, EXPERIMENT = "uicheck", "ui-check"
WAIT_S = 60


@pytest.fixture(scope="module")
def finished(ray_local, settings):
    """A finished sweep: transformer × MQAR, 4 searched configurations one at a time (ASHA decides in a
    fixed order, so the same one is stopped every time), then seeds 0 and 1; trials of a few seconds,
    long enough for system metrics (sampled every 2 s)."""
    from amlab.platform.api import plan
    from amlab.platform.status import Kind
    from amlab.platform.sweep import run_sweep

    launch = plan(Kind.SWEEP, {
        "name": SWEEP, "experiment": EXPERIMENT,
        "mechanisms": {"transformer": {"d_model": 16, "heads": 2}},
        "tasks": {"mqar": {"vocab_size": 32, "seq_len": 16, "num_kv_pairs": 2}},
        "seeds": [0, 1],
        "train": {"steps": 400, "batch_size": 16, "eval_every": 50, "log_every": 25, "eval_batches": 1},
        "search": {"trials": 4, "scheduler": "asha", "grace_evals": 1, "reduction_factor": 2},
        "resources": {"max_concurrent": 1},
    })
    assert run_sweep(launch, settings).status == "FINISHED"
    client = MlflowClient(settings.mlflow_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None, "the sweep's runs are not in the experiment its spec names"
    return client, exp.experiment_id, client.search_runs([exp.experiment_id], max_results=100)


@contextlib.contextmanager
def served(cmd: list[str], log, probe: str):
    """A UI server started with the command `amctl ui` runs, stopped (by PID) afterwards."""
    with open(log, "a") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(probe, timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(0.5)
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def shows(driver, text: str) -> bool:
    """Wait until the page's text holds `text` (the UIs render after their API calls return)."""
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, WAIT_S).until(lambda d: text in d.find_element("tag name", "body").text)
        return True
    except Exception:  # a timeout: say what the page held instead
        print(driver.find_element("tag name", "body").text[:3000])
        return False


def unfold(driver, run_name: str) -> None:
    """Click the +/- button beside a parent run's name in the runs table."""
    cell = driver.find_element("xpath", f"//div[@role='gridcell'][.//a[normalize-space()='{run_name}']]")
    cell.find_element("css selector", "button").click()


def test_the_mlflow_ui_shows_the_run_tree_system_metrics_dumps_models_and_source(finished, tmp_path):
    from amlab.platform import tracking
    from amlab.platform.api import ui_command

    client, exp, runs = finished
    kind = {r.info.run_name: r.data.tags["amctl.kind"] for r in runs}
    trials = [r for r in runs if r.data.tags["amctl.kind"] == "trial"]
    cell = next(name for name, k in kind.items() if k == "cell")
    assert len(trials) == 6 and sum(k == "sweep" for k in kind.values()) == 1
    metered = [r for r in trials if "system/cpu_utilization_percentage" in r.data.metrics]
    assert metered, "no trial logged system metrics"
    assert not any("objective" in r.data.metrics for r in trials)  # search's signed value stays out of MLflow
    trial = next(r for r in metered if r.data.tags["amctl.phase"] == "seed")  # a reported run: its heatmaps are drawn
    images = [a.path for a in client.list_artifacts(trial.info.run_id, "dumps") if a.path.endswith(".png")]
    assert images, "the trial logged no dump image"
    searched = [[a.path for a in client.list_artifacts(r.info.run_id, "dumps")] for r in trials
                if r.data.tags["amctl.phase"] == "search"]
    full = [paths for paths in searched if paths]  # ASHA stops some before their end, where dumps are written
    assert full and all(paths == ["dumps/traces.npz"] for paths in full), "search trials keep traces, drawn nowhere"

    port = free_port()
    cmd, url, log = ui_command(port, False, SWEEP)
    assert url.endswith(f"/#/experiments/{exp}/runs?workflowType=machine_learning")
    driver = browser(tmp_path / "profile")
    with served(cmd, log, f"http://127.0.0.1:{port}/health"):
        try:
            # the URL amctl prints: the sweep's runs, in the machine-learning view (not MLflow 3's GenAI overview)
            driver.get(url)
            assert shows(driver, "8 matching runs") and shows(driver, SWEEP)
            sidebar = driver.find_element("tag name", "body").text
            assert "Model registry" in sidebar and "Training runs" not in sidebar  # not the GenAI sidebar
            unfold(driver, SWEEP)
            assert shows(driver, cell)
            unfold(driver, cell)
            for t in trials:
                assert shows(driver, t.info.run_name), f"trial run {t.info.run_name} not shown under its cell"
            driver.save_screenshot(str(tmp_path / "runs.png"))

            cell_id = next(r.info.run_id for r in runs if r.info.run_name == cell)
            driver.get(f"http://127.0.0.1:{port}/#/experiments/{exp}/runs/{cell_id}?workflowType=machine_learning")
            assert shows(driver, f"{cell}: 2 seeds, 4 search trials")  # the cell's description (its MLflow note)

            base = f"http://127.0.0.1:{port}/#/experiments/{exp}/runs/{trial.info.run_id}"
            driver.get(f"{base}?workflowType=machine_learning")  # the run's page: its parent and its source
            assert shows(driver, f"Parent run\n{cell}")
            assert shows(driver, tracking.context_tags()["mlflow.source.git.commit"][:7])

            driver.get(f"{base}/system-metrics?workflowType=machine_learning")
            assert shows(driver, "cpu_utilization_percentage")  # a chart of it, drawn from the trial's samples
            assert shows(driver, trial.info.run_name)

            driver.get(f"{base}/artifacts/{images[0]}?workflowType=machine_learning")  # the artifact viewer's preview
            from selenium.webdriver.support.ui import WebDriverWait

            png = Path(client.download_artifacts(trial.info.run_id, images[0], str(tmp_path)))
            width = int.from_bytes(png.read_bytes()[16:20], "big")  # the PNG header's width
            shown = ("return Array.from(document.images).filter(i => i.src.startsWith('blob:') && i.complete)"
                     ".map(i => i.naturalWidth)")
            WebDriverWait(driver, WAIT_S).until(lambda d: width in d.execute_script(shown))

            driver.get(f"http://127.0.0.1:{port}/#/experiments/{exp}/models?workflowType=machine_learning")
            assert shows(driver, trial.info.run_name)  # its logged model, with the run it came from
            modelled = [r.info.run_name for r in trials
                        if client.search_logged_models([exp], filter_string=f"source_run_id = '{r.info.run_id}'")]
            assert trial.info.run_name in modelled and all(shows(driver, name) for name in modelled)
        finally:
            driver.quit()


def test_optuna_dashboard_shows_the_cells_study_with_positive_accuracies_and_a_pruned_trial(finished, settings, tmp_path):
    from amlab.platform.api import ui_command

    [summary] = [s for s in optuna.get_all_study_summaries(settings.optuna_url) if s.study_name.startswith(f"{SWEEP}:")]
    study = optuna.load_study(study_name=summary.study_name, storage=settings.optuna_url)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.PRUNED in states and states.count(optuna.trial.TrialState.COMPLETE) >= 1
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and study.best_value > 0
    study_id = study._study_id

    port = free_port()
    cmd, url, log = ui_command(port, True)
    driver = browser(tmp_path / "profile")
    with served(cmd, log, f"{url}/api/studies"):
        try:
            driver.get(f"{url}/dashboard")
            assert shows(driver, summary.study_name) and shows(driver, "Direction: MAXIMIZE")
            driver.get(f"{url}/dashboard/studies/{study_id}")
            assert shows(driver, f"Best Trial (number={study.best_trial.number})")
            assert shows(driver, f"{study.best_value:g}")
            driver.get(f"{url}/dashboard/studies/{study_id}/trials")
            pruned = next(t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED)
            assert shows(driver, f"Trial {pruned.number}\nPruned")
            assert "-0." not in driver.find_element("tag name", "body").text  # no sign-flipped accuracy anywhere
            driver.save_screenshot(str(tmp_path / "optuna.png"))
        finally:
            driver.quit()
