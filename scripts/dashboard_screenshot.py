"""docs/dashboard.png from a real run: the sim fine-tuning graph with its dashboard, in headless Chromium.

    .venv/bin/python scripts/dashboard_screenshot.py [--out docs/dashboard.png] [--work /tmp/coirl-shot]

A scaled-down `make demo` (coirl_ros/sim_demo.py): scripted demonstrations through the record graph,
a local BC base trained on them, then `coirl launch finetune --sim`'s graph with a CPU-sized learner;
once the learner has published weights and a few rollouts are labelled, the page is photographed.
Every number on it is the running graph's. Takes a few minutes on a 2-core machine.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

from coirl_ros.configs import LearnerConfig, load_config
from coirl_ros.data import EpisodeStore
from coirl_ros.graph import build_graph, resolve_config
from coirl_ros.launcher import Launcher, launch_environment, run_graph

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,1400",
)  # fmt: skip
COMMON = {"robot_config": "robot_sim_state.yaml", "task_config": "task_lift.yaml"}


def quiet(name: str, line: str) -> bool:
    return name == "dashboard_node" or "episode" in line


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="docs/dashboard.png")
    parser.add_argument("--work", default="")
    parser.add_argument("--demos", type=int, default=4)
    parser.add_argument("--rollouts", type=int, default=6, help="labelled rollouts before the photo")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="coirl-shot-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store = work / "episodes.zarr"
    env = launch_environment()

    print("1/3 scripted demonstrations", flush=True)
    record = build_graph("record", True, {**COMMON, "store": str(store), "episodes": str(args.demos),
                                          "real_time_factor": "2.0", "dashboard": "false"})  # fmt: skip
    if run_graph(record, env=env, log_dir=work / "logs" / "record", echo=quiet) != 0:
        return 1

    print("2/3 local BC base", flush=True)
    import torch

    from coirl_ros.policies.local_bc_base import LocalBCConfig, train_local_bc_base

    torch.set_num_threads(1)
    train_local_bc_base(EpisodeStore.open(store), LocalBCConfig(steps=1500)).save(work / "base")
    learner = load_config(resolve_config("learner_sim.yaml", "learner_config"), LearnerConfig).model_dump(
        mode="json"
    )
    learner["store"] = str(store)
    learner["bc"]["steps"], learner["critic"]["pretrain_steps"] = 1000, 300
    learner["publish_every_updates"] = learner["checkpoint_every_updates"] = 100
    (work / "learner.yaml").write_text(yaml.safe_dump(learner))

    print("3/3 fine-tuning graph with the dashboard", flush=True)
    finetune = build_graph("finetune", True, {
        **COMMON, "store": str(store), "episodes": "40", "base_checkpoint": str(work / "base"),
        "learner_config": str(work / "learner.yaml"), "checkpoint": str(work / "learner.pt"),
        "dashboard_port": "0",
    })  # fmt: skip
    with Launcher(finetune, env=env, log_dir=work / "logs" / "finetune", echo=quiet) as launcher:
        if not launcher.wait_output("dashboard_node", "dashboard: http", timeout=120):
            return 1
        url = re.search(r"dashboard: (http://\S+)", launcher.output("dashboard_node")).group(1)
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By

        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={work / 'chromium'}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(url)
            deadline = time.monotonic() + 900
            while launcher.running and time.monotonic() < deadline:
                points = driver.find_element(By.ID, "success-curve").get_attribute("data-points") or "0"
                losses = driver.find_elements(By.CSS_SELECTOR, "#loss-curves svg")
                if int(points) >= args.rollouts and losses:
                    break
                time.sleep(2)
            time.sleep(2)
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1400, min(int(height) + 40, 3000))  # the whole page
            time.sleep(1)
            driver.save_screenshot(args.out)
            print(f"wrote {args.out} ({points} labelled rollouts on the curve)", flush=True)
        finally:
            driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
