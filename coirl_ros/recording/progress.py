"""Running tally of unattended episodes (episode_driver): one line per episode, a summary at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EpisodeTally:
    """Episodes run so far: steps and outcome of each, and the running success rate."""

    total: int
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def successes(self) -> int:
        return sum(1 for r in self.results if r["success"])

    def record(self, index: int | None, steps: int, success: bool, seed: int | None, seconds: float) -> str:
        """Add one episode and return its progress line."""
        self.results.append(
            {"index": index, "steps": steps, "success": success, "seed": seed, "seconds": seconds}
        )
        n = len(self.results)
        rate = self.successes / n
        return (
            f"episode {n}/{self.total}: store index {index}, seed {seed}, {steps} steps,"
            f" {'success' if success else 'failure'} ({seconds:.1f} s);"
            f" success rate {self.successes}/{n} = {rate:.0%}"
        )

    def summary(self) -> dict[str, Any]:
        n = len(self.results)
        return {
            "episodes": n,
            "successes": self.successes,
            "success_rate": self.successes / n if n else 0.0,
            "mean_steps": sum(r["steps"] for r in self.results) / n if n else 0.0,
            "results": self.results,
        }
