"""A daemon's ``--config`` file: a YAML map of option: value, read and checked (kds.config)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kds.errors import ConfigError
from kds.safe_yaml import AliasRefused, NoAliasLoader, where_and_problem

__all__ = ["read_config_file"]


def read_config_file(path: Path) -> dict[str, tuple[object, Any]]:
    """Each option the file sets, by its name with ``_`` for ``-``: (the key as the file
    spells it, its value). Refused with a ConfigError naming the file and the place: a file
    that cannot be read or is not YAML, YAML anchors and aliases, a key given twice (YAML
    forbids it, and the last copy would win silently), the same option spelled both ways
    (``log-level`` and ``log_level``), a file that is not a map."""
    try:
        doc = yaml.load(path.read_text(), Loader=NoAliasLoader) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except AliasRefused as e:
        raise ConfigError(f"config file {path}: {e}") from None
    except yaml.MarkedYAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML{where_and_problem(e)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path} must be a map of option: value")
    options: dict[str, tuple[object, Any]] = {}
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        if name in options:
            raise ConfigError(
                f"config file {path}: option {key!r} is also given as "
                f"{options[name][0]!r}: give it once"
            )
        options[name] = (key, value)
    return options
