"""`nemgan models list|show|activate|rollback|push|delete`: the service's model registry over HTTP.

A small standard-library client (urllib, no extra package): `--url` (NEMGAN_URL, default
http://127.0.0.1:8000) and `--api-key` (NEMGAN_API_KEY) for the calls that change something. `push` packs a
model directory (what `nemgan export` writes) into a .tar.gz in a temporary file and streams it to
POST /v1/models/{name}/versions, where it is checked like any version before it can be activated.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import fail

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Manage the models of a running service (list, activate, rollback, push, delete).")

Url = Annotated[str, typer.Option("--url", envvar="NEMGAN_URL", help="The service (NEMGAN_URL).")]
Key = Annotated[Optional[str], typer.Option("--api-key", envvar="NEMGAN_API_KEY",
                                            help="Bearer key for changes (NEMGAN_API_KEY).")]
Timeout = Annotated[float, typer.Option(help="Seconds to wait for the service.")]
DEFAULT_URL = "http://127.0.0.1:8000"


def call(method: str, url: str, path: str, key: str | None = None, body=None, headers: dict | None = None,
         timeout: float = 60.0):
    """One request -> the decoded JSON body; a refusal or an unreachable service ends the command (exit 1)."""
    h = {"Accept": "application/json", **(headers or {})}
    if key:
        h["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url.rstrip("/") + path, data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 (the URL is the user's)
            raw = r.read()
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            err = json.loads(raw)
            msg = err.get("error") or raw.decode(errors="replace")
        except ValueError:
            msg = raw.decode(errors="replace")[:500]
        fail(f"{method} {path}: {e.code} {msg}", code=1)
    except (urllib.error.URLError, OSError) as e:
        fail(f"cannot reach {url}: {getattr(e, 'reason', e)}", code=1)
    return json.loads(raw) if raw else None


def _show(doc) -> None:
    typer.echo(json.dumps(doc, indent=2))


@app.command("list")
def list_(url: Url = DEFAULT_URL, timeout: Timeout = 60.0,
          as_json: Annotated[bool, typer.Option("--json", help="The raw JSON.")] = False) -> None:
    """Models, their active and served versions, and any problem."""
    models = call("GET", url, "/v1/models", timeout=timeout)
    if as_json:
        return _show(models)
    for m in models:
        serving = m.get("serving_version")
        line = f"{m['name']}: active {m['active_version']}"
        if serving != m["active_version"]:
            line += f", serving {serving}"
        line += f" (versions {', '.join(m['versions'])})"
        typer.echo(line)
        if m.get("problem"):
            typer.secho(f"  problem: {m['problem'].get('reason')}", fg=typer.colors.YELLOW)


@app.command()
def show(name: str, url: Url = DEFAULT_URL, timeout: Timeout = 60.0) -> None:
    """A model's versions (priors, metrics, whether each can be served) as JSON."""
    _show(call("GET", url, f"/v1/models/{name}", timeout=timeout))


@app.command()
def activate(name: str, version: str, url: Url = DEFAULT_URL, api_key: Key = None, timeout: Timeout = 60.0) -> None:
    """Make a version active (refused, with the reason, when it cannot be served)."""
    m = call("POST", url, f"/v1/models/{name}/versions/{version}/activate", api_key, timeout=timeout)
    typer.echo(f"{name}: active {m['active_version']}")


@app.command()
def rollback(name: str, url: Url = DEFAULT_URL, api_key: Key = None, timeout: Timeout = 60.0) -> None:
    """Re-activate the version that was active before the current one."""
    m = call("POST", url, f"/v1/models/{name}/rollback", api_key, timeout=timeout)
    typer.echo(f"{name}: active {m['active_version']}")


def _preflight(url: str, path: str, key: str | None, timeout: float) -> None:
    """An empty upload first: the service checks the key and the name before it reads a body, and answers a
    refusal at once, which a client still sending megabytes would only see as a reset connection."""
    req = urllib.request.Request(url.rstrip("/") + path, data=b"", method="POST",
                                 headers={"Accept": "application/json", "Content-Type": "application/gzip",
                                          **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        urllib.request.urlopen(req, timeout=timeout).close()  # noqa: S310
    except urllib.error.HTTPError as e:
        if e.code == 400:  # "send the model directory": the key and the name were accepted
            return
        call("POST", url, path, key, body=b"", headers={"Content-Type": "application/gzip"}, timeout=timeout)
    except (urllib.error.URLError, OSError) as e:
        fail(f"cannot reach {url}: {getattr(e, 'reason', e)}", code=1)


@app.command()
def push(name: str, model_dir: Annotated[Path, typer.Argument(help="A model directory (nemgan export).")],
         url: Url = DEFAULT_URL, api_key: Key = None, timeout: Timeout = 600.0,
         activate_: Annotated[bool, typer.Option("--activate", help="Activate it once registered.")] = False) -> None:
    """Upload a model directory as the next version of NAME (checked by the service before it is registered)."""
    if not (model_dir / "manifest.json").is_file():
        fail(f"{model_dir} is not a model directory (no manifest.json)")
    _preflight(url, f"/v1/models/{name}/versions", api_key, timeout)
    with tempfile.TemporaryFile() as tmp:
        with tarfile.open(fileobj=tmp, mode="w:gz") as tar:
            for p in sorted(model_dir.rglob("*")):
                if p.is_symlink():
                    fail(f"{p}: links are not uploaded; copy the file in")
                if p.is_file() and not p.name.startswith("."):
                    tar.add(p, arcname=str(p.relative_to(model_dir)), recursive=False)
        size = tmp.tell()
        tmp.seek(0)
        r = call("POST", url, f"/v1/models/{name}/versions?activate={'true' if activate_ else 'false'}", api_key,
                 body=tmp, headers={"Content-Type": "application/gzip", "Content-Length": str(size)},
                 timeout=timeout)
    typer.echo(f"{name}: registered version {r['version']}" + (" (active)" if r.get("activated") else ""))


@app.command()
def delete(name: str, version: str, url: Url = DEFAULT_URL, api_key: Key = None, timeout: Timeout = 60.0) -> None:
    """Delete a version that is not active."""
    call("DELETE", url, f"/v1/models/{name}/versions/{version}", api_key, timeout=timeout)
    typer.echo(f"{name}: deleted version {version}")

