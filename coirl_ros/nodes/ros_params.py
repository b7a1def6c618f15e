"""ROS parameters onto the typed configs: YAML files give the defaults, parameters override fields.

Every node declares one `<kind>_config` parameter per config file it reads (default: the shipped
file in share/coirl_ros/config) and one parameter per overridable scalar field, declared with the
file's value as default so `ros2 param get` shows what is in force. The result is validated by the
same pydantic model as the file, so a bad parameter fails with the field named, exactly like a bad
YAML key. Parameters are dynamically typed (`-p fps:=30` and `-p fps:=30.0` both work); pydantic
does the conversion and the checking.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter

from coirl_ros.configs.loading import ConfigModel, config_from_dict, load_config
from coirl_ros.paths import config_dir

_DYNAMIC = ParameterDescriptor(dynamic_typing=True)


def declare_config_file[ModelT: ConfigModel](
    node: Node, name: str, default_file: str, model_cls: type[ModelT]
) -> ModelT:
    """Declare `name` (a YAML path; relative names resolve against share/coirl_ros/config) and load it."""
    value = node.declare_parameter(name, default_file).value
    path = Path(str(value))
    if not path.is_absolute() and not path.exists():
        path = config_dir() / path
    return load_config(path, model_cls)


def declare_overrides[ModelT: ConfigModel](
    node: Node, model: ModelT, fields: Sequence[str], prefix: str = ""
) -> ModelT:
    """Declare parameter `prefix + field` for each of `fields` (scalar fields of `model`), default
    = the model's value, and return the model with the parameters applied and validated."""
    data = model.model_dump()
    overrides = {}
    for field in fields:
        if field not in data:
            raise KeyError(f"{type(model).__name__} has no field {field!r}")
        current = data[field]
        default = "" if current is None else current
        param = node.declare_parameter(prefix + field, default, _DYNAMIC)
        if param.type_ == Parameter.Type.NOT_SET:
            continue
        value = param.value
        if current is None and value == "":
            continue
        if value != default:
            overrides[field] = value
    if not overrides:
        return model
    source = f"ROS parameters of {node.get_name()} ({', '.join(prefix + k for k in overrides)})"
    return config_from_dict(type(model), data | overrides, source=source)
