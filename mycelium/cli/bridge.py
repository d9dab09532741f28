"""``mycelium bridge``: topics to and from other hosts through NATS JetStream."""

from __future__ import annotations

from pathlib import Path

import typer

from mycelium.cli.app import LogFormatOption, LogLevelOption, SocketOption, app, fail, setup_logging


@app.command()
def bridge(
    socket: str | None = SocketOption,
    nats: list[str] = typer.Option(
        [], "--nats", help="NATS server URL; repeat (or comma-separate) for a cluster."
    ),
    export: list[str] = typer.Option([], "--export", help="Topic to export; repeatable."),
    import_: list[str] = typer.Option([], "--import", help="Topic to import; repeatable."),
    name: str | None = typer.Option(None, "--name", help="This host's name (default: hostname)."),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Config (TOML) whose bridge section to use."
    ),
    state_dir: str | None = typer.Option(None, "--state-dir", help="Import cursors, status."),
    metrics: str | None = typer.Option(None, "--metrics", help="Serve /metrics on HOST:PORT."),
    creds: str | None = typer.Option(None, "--creds", help="NATS credentials file."),
    tls_ca: str | None = typer.Option(None, "--tls-ca", help="CA bundle for NATS TLS."),
    tls_cert: str | None = typer.Option(None, "--tls-cert", help="Client certificate (TLS)."),
    tls_key: str | None = typer.Option(None, "--tls-key", help="Client key (TLS)."),
    log_level: str = LogLevelOption,
    log_format: str = LogFormatOption,
) -> None:
    """Bridge topics to and from other hosts through NATS JetStream (docs/distribution.md)."""
    import msgspec

    from mycelium.bridge import run_bridge
    from mycelium.config import BridgeConfig, load_config
    from mycelium.errors import ConfigError, MyceliumError

    setup_logging(log_level, log_format)
    try:
        cfg = load_config(config) if config else None
        base = cfg.bridge if cfg else BridgeConfig()
        given = {
            "nats": tuple(u for arg in nats for u in arg.split(",") if u),
            "export": tuple(export),
            "import": tuple(import_),
            "name": name,
            "state_dir": state_dir,
            "metrics": metrics,
            "creds": creds,
            "tls_ca": tls_ca,
            "tls_cert": tls_cert,
            "tls_key": tls_key,
        }
        merged = msgspec.to_builtins(base) | {k: v for k, v in given.items() if v}
        bridge_cfg = msgspec.convert(merged, BridgeConfig)
        socket = socket or (cfg.server.socket_path if cfg else None)
        run_bridge(bridge_cfg, socket)
    except msgspec.ValidationError as exc:
        raise fail(f"bad bridge option: {exc}", 2) from exc
    except ConfigError as exc:
        raise fail(f"bad config: {exc}", 2) from exc
    except (MyceliumError, OSError) as exc:
        raise fail(f"bridge: {exc}") from exc
