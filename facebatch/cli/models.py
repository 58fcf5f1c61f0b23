"""`facebatch models list|fetch|verify|convert`: the named checkpoints, the cache, and our own format."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from facebatch.cli.console import out, styled
from facebatch.errors import CheckpointError, FacebatchError, InputError, ModelNotAvailable, RunFailed
from facebatch.nets import cache, registry

app = typer.Typer(
    help="Known pretrained checkpoints, the download cache, verification and conversion.", no_args_is_help=True
)


def _sha_status(entry: registry.ModelEntry) -> str:
    if entry.sha256:
        return f"pinned {entry.sha256[:12]}"
    recorded = cache.read_sidecar(entry.cache_path()) if entry.is_cached() else None
    return f"recorded {recorded[:12]} (not pinned)" if recorded else "not pinned"


@app.command("list")
def list_models() -> None:
    """Show every named checkpoint, whether it is cached, and where."""
    root = cache.models_dir()
    table = Table(title=f"models (paths under {root})")
    table.add_column("name", no_wrap=True)
    for col in ("kind", "res", "cached", "path", "sha256"):
        table.add_column(col, overflow="fold")
    for entry in registry.models().values():
        cached = entry.is_cached()
        shown = "built in" if entry.builtin else str(entry.cache_path().relative_to(root))
        table.add_row(
            entry.name,
            entry.kind,
            str(entry.resolution),
            styled(("yes", "green")) if cached else "no",
            shown if cached else styled((shown, "dim")),
            _sha_status(entry),
        )
    out.print(table)


def _entry(name: str) -> registry.ModelEntry:
    entry = registry.get(name)
    if entry is None:
        raise InputError(f"unknown model {name!r} (known: {', '.join(registry.models())})")
    return entry


@app.command("fetch")
def fetch(
    name: Annotated[
        str,
        typer.Argument(metavar="NAME", help="A name from `facebatch models list`, or an open_clip CLIP as ARCH:TAG."),
    ],
    force: Annotated[bool, typer.Option("--force", help="Download again even if cached.")] = False,
) -> None:
    """Download a named checkpoint (or an open_clip CLIP, e.g. ViT-B-32:openai) into the cache, once.

    Verified and atomic, once across processes: fetch on a machine with internet, then run where there is none.
    """
    if registry.get(name) is None and ":" in name:
        _fetch_clip(name, force)
        return
    entry = _entry(name)
    was_cached = entry.is_cached()
    with _keeping(entry.cache_path() if force and was_cached else None):
        path = entry.fetch(force=force)
    verb = "already cached" if was_cached and not force else "downloaded"
    out.print(f"{verb}: {entry.name} -> {path}  sha256 {cache.sha256_of(path)}", highlight=False, soft_wrap=True)


@contextmanager
def _keeping(cached: Path | None):
    """A --force download that fails says that the cached copy it would have replaced is still there, as it was."""
    try:
        yield
    except FacebatchError as exc:
        if cached is None:
            raise
        raise type(exc)(f"{exc}; the cached copy at {cached} is kept as it was") from None


def _fetch_clip(spec: str, force: bool) -> None:
    """ARCH:TAG into models/clip/ARCH-TAG/ (what --clip ARCH:TAG reads), with its sha256 sidecar."""
    from facebatch.nets import clip

    arch, _, tag = spec.partition(":")
    if not arch.strip() or not tag.strip():  # ":" alone would otherwise name "." as a local file
        raise InputError(
            f"{spec!r}: name a model from `facebatch models list` or an open_clip CLIP as ARCH:TAG "
            "(e.g. ViT-B-32:openai)"
        )
    if Path(tag).expanduser().is_file():
        raise InputError(f"{spec}: a local file needs no fetching; pass it as --clip {spec}")
    dest = clip.pretrained_cache_path(arch, tag)
    was_cached = dest.is_file()
    with _keeping(dest if force and was_cached else None):
        ref = clip.resolve_clip(spec, refresh=force)
    verb = "already cached" if was_cached and not force else "downloaded"
    out.print(f"{verb}: CLIP {spec} -> {ref.path}  sha256 {ref.sha256}", highlight=False, soft_wrap=True)


def _expected_sha256(path: Path, entry: registry.ModelEntry | None, given: str | None) -> tuple[str | None, str]:
    """What to compare with, in order: --sha256, the registry pin, the hash recorded at download."""
    if given:
        return given, "--sha256"
    if entry is not None and entry.sha256:
        return entry.sha256, "registry"
    return cache.read_sidecar(path), "recorded at download"


@app.command("verify")
def verify(
    target: Annotated[str, typer.Argument(metavar="TARGET", help="A model name or a checkpoint path.")],
    sha256: Annotated[Optional[str], typer.Option("--sha256", help="Expected sha256 (overrides the registry).")] = None,
) -> None:
    """Re-hash a checkpoint and compare with the pinned, recorded or given sha256 (exit 1 on mismatch)."""
    from facebatch.nets.checkpoints import sniff

    entry = registry.get(target)
    path = entry.cache_path() if entry is not None else Path(target).expanduser()
    if entry is not None and not path.is_file():
        raise ModelNotAvailable(f"{target} is not cached (expected at {path}); run `facebatch models fetch {target}`")
    if not path.is_file():
        raise InputError(f"not a model name and not a file: {target}")
    expected, source = _expected_sha256(path, entry, sha256)
    kind = sniff(path)
    digest = cache.sha256_of(path, reuse=False)
    out.print(f"{path}: {kind}, {path.stat().st_size} bytes, sha256 {digest}", highlight=False, soft_wrap=True)
    if not expected:
        out.print("no expected sha256 to compare with (pass --sha256 to pin one)")
    elif digest != expected.lower():
        raise RunFailed(f"sha256 mismatch for {path}: expected {expected.lower()} ({source}), got {digest}")
    else:
        out.print(styled(("ok", "green"), f": matches the {source} sha256"))


@app.command("convert")
def convert(
    src: Annotated[str, typer.Argument(metavar="SRC", help="Any readable checkpoint: path, model name or URL.")],
    dst: Annotated[Path, typer.Argument(metavar="DST", help="Output .safetensors file (facebatch format).")],
    no_d: Annotated[bool, typer.Option("--no-d", help="Leave the discriminator out.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace DST if it exists.")] = False,
) -> None:
    """Convert a checkpoint to facebatch's safetensors format (no pickles left to trust)."""
    from facebatch.nets.checkpoints import build_networks, read_checkpoint, resolve
    from facebatch.nets.native_format import write_native

    if dst.suffix != ".safetensors":
        raise InputError(f"{dst}: the output must end in .safetensors")
    if dst.exists() and not overwrite:
        raise InputError(f"{dst} exists; pass --overwrite to replace it")
    path, _name = resolve(src)
    kind, raw = read_checkpoint(path)
    if no_d:
        raw.d_kwargs = raw.d_state = None
    G, D = build_networks(path, raw)  # refuse to write weights our networks cannot load
    extra = {**raw.extra, "converted_from": {"path": str(path), "format": kind, "sha256": cache.sha256_of(path)}}
    try:
        write_native(dst, raw.g_kwargs, G.state_dict(), raw.d_kwargs, D.state_dict() if D is not None else None, extra)
    except OSError as exc:
        raise CheckpointError(f"cannot write {dst}: {exc.strerror or exc}") from None
    out.print(
        f"wrote {dst} ({kind} -> facebatch-safetensors, {G.img_resolution}px, "
        f"{'with' if D is not None else 'without'} D)  sha256 {cache.sha256_of(dst)}",
        highlight=False,
        soft_wrap=True,
    )
