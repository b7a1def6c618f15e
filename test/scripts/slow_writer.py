"""Child process for the concurrency test: writes N episodes of varying length, slowly.

Usage: slow_writer.py STORE EPISODES
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from conftest import make_frame

from coirl_ros.data import EpisodeStore

store = EpisodeStore.open(sys.argv[1])
with store.writer(flush_every=5) as writer:
    for e in range(int(sys.argv[2])):
        index = writer.begin_episode("lift", "policy", policy_version=e)
        for t in range(15 + 3 * e):
            writer.add_frame(make_frame(store.spec, index, t))
            time.sleep(0.002)
        writer.save_episode(success=None)
print("WRITER DONE", flush=True)
