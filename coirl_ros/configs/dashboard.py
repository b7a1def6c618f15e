"""The operator dashboard (dashboard_node): where it listens, who may use it, what it reads."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import Field, field_validator

from coirl_ros.configs.loading import ConfigModel

MIN_TOKEN_LENGTH = 16
_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


class DashboardConfig(ConfigModel):
    """Web server, access token, the episode store it shows and how it judges liveness."""

    # Loopback by default: the page can start episodes and hold the robot. Binding another address
    # (a lab network) is a deliberate choice; the token still guards every endpoint.
    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8765  # 0 = any free port (the URL printed says which)
    # "" = a fresh random token at every start (printed once with the URL). A fixed token is for
    # bookmarks and scripts; keep it out of version control.
    token: str = ""
    # Host header values accepted besides localhost/127.0.0.1/::1 and `host` itself (DNS rebinding
    # guard); ["*"] accepts any.
    allowed_hosts: list[str] = []
    store: Annotated[str, Field(min_length=1)] = "runs/episodes.zarr"  # the recorder's store
    update_period_s: Annotated[float, Field(gt=0, le=10)] = 1.0  # live updates to the page
    # A node whose diagnostics are older than this is shown dead (diagnostics come every 1-2 s).
    node_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    # Nodes listed even before they are first seen (others appear when they join the graph).
    expected_nodes: list[str] = ["joint_node", "policy_node", "recorder_node", "learner_node"]
    service_timeout_s: Annotated[float, Field(gt=0)] = 5.0  # a command's service call, then 503
    success_window: Annotated[int, Field(gt=0)] = 20  # episodes in the rolling success rate
    curve_sources: list[str] = ["policy"]  # episode sources on the success curve (autonomous rollouts)
    loss_history: Annotated[int, Field(ge=10)] = 500  # learner reports kept for the loss curves

    @field_validator("token")
    @classmethod
    def _token_strength(cls, value: str) -> str:
        if value and (len(value) < MIN_TOKEN_LENGTH or not value.isprintable() or " " in value):
            raise ValueError(
                f"a configured token needs at least {MIN_TOKEN_LENGTH} printable characters and no spaces"
                ' (or "" to generate one at start)'
            )
        return value

    @field_validator("host")
    @classmethod
    def _host_is_address_or_name(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOST_NAME.fullmatch(value):
                raise ValueError(f"{value!r} is neither an IP address nor a host name") from None
        return value

    @property
    def loopback_only(self) -> bool:
        """True when the server is reachable from this machine only."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
