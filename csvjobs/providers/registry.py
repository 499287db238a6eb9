"""Choosing a provider by name: the only module that names the implementations (each imported only when chosen,
so that the openai SDK loads only for the openai provider)."""

from __future__ import annotations

import importlib

from csvjobs.config import Settings
from csvjobs.errors import ConfigError
from csvjobs.providers.contract import Provider
from csvjobs.providers.noop import NoopProvider

PROVIDER_NAMES = ("offline", "openai", "noop")


def default_provider_name(settings: Settings) -> str:
    """openai when an API key is configured, offline otherwise."""
    return "openai" if settings.openai_api_key is not None else "offline"


def load_provider(spec: str, settings: Settings) -> Provider:
    """A provider from its name: offline, openai, noop[:SECONDS], or module:attribute for your own."""
    name, _, arg = spec.partition(":")
    if name == "offline":
        from csvjobs.providers.offline import OfflineProvider

        return OfflineProvider(settings)
    if name == "openai":
        try:
            from csvjobs.providers.openai_batch_rows import OpenAIBatchProvider
        except ImportError as exc:
            raise ConfigError("the openai provider is not available in this version") from exc
        return OpenAIBatchProvider(settings)
    if name == "noop":
        try:
            return NoopProvider(float(arg) if arg else 0.0)
        except ValueError as exc:
            raise ConfigError(f"--provider {spec!r}: the noop delay must be a number of seconds") from exc
    if arg:
        try:
            module = importlib.import_module(name)
            factory = getattr(module, arg)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"--provider {spec!r}: cannot load {arg} from module {name}: {exc}") from exc
        provider: Provider = factory(settings)
        return provider
    raise ConfigError(
        f"unknown provider {spec!r}; choose {', '.join(PROVIDER_NAMES)} (or module:attribute for your own)"
    )
