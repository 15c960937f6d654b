"""``charlite pull REPO[:QUANT|:FILE]``: one GGUF from the Hugging Face Hub, resumable and verified.

``huggingface_hub`` does the talking (``HF_ENDPOINT``, ``HF_TOKEN``, ``HF_HUB_OFFLINE``, its
errors, its progress bar and its ranged, retrying GET). The file is written to
``models/.downloads/NAME/FILE.part`` and survives an interruption (even ``kill -9``): the next
pull asks only for the missing bytes. It counts as pulled once its sha256 matches the Hub's
and its GGUF header reads; only then is it moved to ``models/NAME/`` with its manifest.

Why CHARLITE_HOME/models and not the Hugging Face cache: one folder holds everything charlite
made or fetched (``CHARLITE_HOME`` moves or deletes it all, tests stay isolated), the file has
a plain name and no symlinks (Windows), and the partial download is charlite's own, so resuming
does not depend on how a given ``huggingface_hub`` version names its temporary files. GGUFs
already in the Hugging Face cache are still found by ``charlite models``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from charlite.errors import CharliteError, ModelError, NotFoundError, StorageError
from charlite.files import read_json, write_json_atomic
from charlite.gguf import check_gguf, file_sha256
from charlite.home import NAME_RE, ensure_dir
from charlite.pulled import MANIFEST, MANIFEST_KIND, PulledModel, find_pulled, models_dir

DEFAULT_QUANT = "Q4_K_M"
_SPLIT = re.compile(r"-\d{5}-of-(\d{5})\.gguf$", re.IGNORECASE)


class PullError(CharliteError):
    """A pull that cannot start or finish; the message says what to do."""


@dataclass(frozen=True)
class Curated:
    name: str
    repo: str
    file: str
    size: str
    ram: str
    licence: str
    good_for: str


# Laptop models known to role-play well for their size: Q4_K_M files, one GGUF each.
CURATED: tuple[Curated, ...] = (
    Curated(
        "smollm2-1.7b",
        "HuggingFaceTB/SmolLM2-1.7B-Instruct-GGUF",
        "smollm2-1.7b-instruct-q4_k_m.gguf",
        "1.1 GB",
        "3 GB",
        "Apache-2.0",
        "the embedded model's big sibling: quick on any laptop, light on facts",
    ),
    Curated(
        "qwen2.5-1.5b",
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        "qwen2.5-1.5b-instruct-q4_k_m.gguf",
        "1.1 GB",
        "3 GB",
        "Apache-2.0",
        "small and fast; a good teacher for quick 'charlite generate' runs",
    ),
    Curated(
        "gemma-2-2b",
        "bartowski/gemma-2-2b-it-GGUF",
        "gemma-2-2b-it-Q4_K_M.gguf",
        "1.7 GB",
        "4 GB",
        "Gemma terms",
        "natural dialogue for its size; short context (8K)",
    ),
    Curated(
        "llama-3.2-3b",
        "bartowski/Llama-3.2-3B-Instruct-GGUF",
        "Llama-3.2-3B-Instruct-Q4_K_M.gguf",
        "2.0 GB",
        "4 GB",
        "Llama 3.2 Community",
        "steady in character; a good everyday chat model on 8 GB laptops",
    ),
    Curated(
        "qwen2.5-3b",
        "Qwen/Qwen2.5-3B-Instruct-GGUF",
        "qwen2.5-3b-instruct-q4_k_m.gguf",
        "2.1 GB",
        "4 GB",
        "Qwen Research (non-commercial)",
        "follows JSON schemas well: a capable local teacher and judge",
    ),
    Curated(
        "qwen2.5-7b",
        "bartowski/Qwen2.5-7B-Instruct-GGUF",
        "Qwen2.5-7B-Instruct-Q4_K_M.gguf",
        "4.7 GB",
        "8 GB",
        "Apache-2.0",
        "the best teacher and judge that fits 16 GB laptops",
    ),
    Curated(
        "llama-3.1-8b",
        "bartowski/Meta-Llama-3.1-8B-Instruct-GGUF",
        "Meta-Llama-3.1-8B-Instruct-Q4_K_M.gguf",
        "4.9 GB",
        "8 GB",
        "Llama 3.1 Community",
        "rich, in-character replies; the chat model for 16 GB laptops",
    ),
)


@dataclass(frozen=True)
class Target:
    """What ``REPO[:QUANT|:FILE]`` (or a curated name) asks for."""

    repo: str
    quant: str | None = None
    file: str | None = None
    name: str | None = None  # the short name, when the argument was a curated one


def parse_ref(text: str) -> Target:
    """``owner/repo``, ``owner/repo:Q4_K_M``, ``owner/repo:file.gguf`` or a curated name.

    >>> parse_ref("Qwen/Qwen2.5-3B-Instruct-GGUF:Q4_K_M")
    Target(repo='Qwen/Qwen2.5-3B-Instruct-GGUF', quant='Q4_K_M', file=None, name=None)
    >>> parse_ref("qwen2.5-3b").name
    'qwen2.5-3b'
    """
    text = (text or "").strip()
    for c in CURATED:
        if text.lower() == c.name:
            return Target(c.repo, file=c.file, name=c.name)
    repo, _, selector = text.partition(":")
    parts = repo.split("/")
    if len(parts) != 2 or not all(
        re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}", p) for p in parts
    ):
        raise PullError(
            f"'{text}' is not a Hub repository",
            hint="write OWNER/REPO[:QUANT|:FILE.gguf], or run 'charlite pull' for a list of models",
        )
    if not selector:
        return Target(repo)
    if selector.lower().endswith(".gguf"):
        return Target(repo, file=selector)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", selector):
        raise PullError(f"'{selector}' is neither a quantization (Q4_K_M) nor a .gguf file name")
    return Target(repo, quant=selector)


def _quant_rx(quant: str) -> re.Pattern:
    return re.compile(r"(?<![a-z0-9])" + re.escape(quant.lower()) + r"(?![a-z0-9_])")


def choose_file(target: Target, files: list[str]) -> str:
    """The one GGUF of ``files`` that ``target`` names (a file, a quant, or Q4_K_M by default)."""
    ggufs = [f for f in files if f.lower().endswith(".gguf") and "mmproj" not in f.lower()]
    if target.file:
        if target.file in files:
            return target.file
        raise PullError(
            f"{target.repo} has no file {target.file}",
            hint=_offer(ggufs),
        )
    if not ggufs:
        raise PullError(f"{target.repo} holds no GGUF file", hint="pick a repository of GGUFs")
    if target.quant:
        matches = [f for f in ggufs if _quant_rx(target.quant).search(Path(f).name.lower())]
        if not matches:
            raise PullError(
                f"{target.repo} has no GGUF matching {target.quant}", hint=_offer(ggufs)
            )
    elif len(ggufs) == 1:
        matches = ggufs
    else:
        matches = [f for f in ggufs if _quant_rx(DEFAULT_QUANT).search(Path(f).name.lower())]
        if not matches:
            raise PullError(
                f"{target.repo} holds {len(ggufs)} GGUFs; say which", hint=_offer(ggufs)
            )
    whole = [f for f in matches if not _SPLIT.search(f)]
    if not whole:
        raise PullError(
            f"{matches[0]} is split in parts, which charlite pull does not join",
            hint="pick another quantization, or join it with llama-gguf-split --merge",
        )
    if len(whole) > 1:
        raise PullError(
            f"{len(whole)} files of {target.repo} match: {', '.join(whole[:4])}",
            hint="name one: charlite pull REPO:FILE.gguf",
        )
    return whole[0]


def _offer(ggufs: list[str]) -> str:
    if not ggufs:
        return "the repository holds no GGUF"
    quants = sorted({_quant_of(f) or Path(f).name for f in ggufs})
    return "it has: " + ", ".join(quants[:12]) + (" ..." if len(quants) > 12 else "")


def _quant_of(filename: str) -> str | None:
    m = re.search(
        r"(?<![A-Za-z0-9])(I?Q\d[A-Z0-9_]*?|F16|BF16|F32)(?=[.-]|$)",
        Path(filename).name.removesuffix(".gguf"),
        re.IGNORECASE,
    )
    return m.group(1).upper() if m else None


def short_name(target: Target, filename: str) -> str:
    """The name the pulled file answers to: curated, else the repository's, less ``-GGUF``."""
    if target.name:
        return target.name
    for c in CURATED:
        if c.repo == target.repo and c.file == filename:
            return c.name
    base = re.sub(r"[-_.]gguf$", "", target.repo.split("/")[1], flags=re.IGNORECASE).lower()
    base = re.sub(r"[^a-z0-9_.-]", "-", base).strip(".-_") or "model"
    existing = find_pulled(base)
    if existing is not None and (existing.repo, existing.filename) != (target.repo, filename):
        base = f"{base}-{(_quant_of(filename) or Path(filename).stem).lower()}"
    base = base[:64]
    if not NAME_RE.fullmatch(base):
        raise PullError(f"cannot make a short name from {target.repo}")
    return base


# -- the Hub --------------------------------------------------------------------------------------


def _hub_error(exc: Exception, target: Target, endpoint: str) -> CharliteError:
    """One line that says what went wrong and what to do."""
    from huggingface_hub import errors as hf

    if isinstance(exc, hf.OfflineModeIsEnabled):
        return _offline()
    if isinstance(exc, hf.GatedRepoError):
        return PullError(
            f"{target.repo} is gated",
            hint="accept its licence on its Hub page, then set HF_TOKEN to a token of that account",
        )
    if isinstance(exc, hf.RepositoryNotFoundError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (401, 403):
            return PullError(
                f"{target.repo} needs a login ({status})",
                hint="it is private or gated: set HF_TOKEN to a token that may read it",
            )
        return PullError(
            f"no repository {target.repo} on {endpoint}",
            hint="check the name (OWNER/REPO), or run 'charlite pull' for a list",
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return PullError(f"{target.repo} has no such revision")
    if isinstance(exc, (hf.EntryNotFoundError, getattr(hf, "RemoteEntryNotFoundError", ()))):
        return PullError(f"{target.repo} has no such file", hint="run the pull without :FILE")
    if isinstance(exc, hf.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", "?")
        if status in (401, 403):
            return PullError(
                f"{target.repo} needs a login ({status})",
                hint="it is private or gated: set HF_TOKEN to a token that may read it",
            )
        return PullError(f"the Hub answered {status} for {target.repo}", hint="try again later")
    name = type(exc).__name__
    if isinstance(exc, (ConnectionError, TimeoutError)) or any(
        word in name for word in ("Connect", "Timeout", "Network", "Protocol")
    ):
        return PullError(
            f"cannot reach {endpoint} ({name})",
            hint="check the network connection (or HF_ENDPOINT); an interrupted pull resumes",
        )
    return PullError(f"download of {target.repo} failed: {name}: {exc}".splitlines()[0])


def _offline() -> PullError:
    return PullError(
        "HF_HUB_OFFLINE is set: charlite pull needs the network",
        hint="unset HF_HUB_OFFLINE to pull, or use a model already here (charlite models)",
    )


def _disk_check(folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    margin = 64 * 1024 * 1024
    if needed + margin > free:
        raise StorageError(
            f"not enough disk space: the download needs {_gb(needed)} more, "
            f"{folder} has {_gb(free)} free",
            hint="free some space, or set CHARLITE_HOME to a bigger disk",
        )


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


@dataclass
class Remote:
    """The file to fetch, as the Hub describes it."""

    repo: str
    filename: str
    revision: str
    sha256: str
    size: int
    url: str


def describe_remote(target: Target) -> Remote:
    """Ask the Hub which file ``target`` means, its commit, size and sha256."""
    from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_url

    endpoint = constants.ENDPOINT
    if constants.HF_HUB_OFFLINE:
        raise _offline()
    try:
        info = HfApi().model_info(target.repo, files_metadata=True)
        siblings = {s.rfilename: s for s in (info.siblings or [])}
        filename = choose_file(target, list(siblings))
        revision = info.sha or "main"
        url = hf_hub_url(target.repo, filename, revision=revision)
        meta = get_hf_file_metadata(url)
    except CharliteError:
        raise
    except Exception as exc:
        raise _hub_error(exc, target, endpoint) from None
    lfs = getattr(siblings[filename], "lfs", None)
    sha = getattr(lfs, "sha256", None) if lfs is not None else None
    if not sha and meta.etag and re.fullmatch(r"[0-9a-f]{64}", meta.etag):
        sha = meta.etag  # an LFS file's ETag is its sha256
    size = getattr(lfs, "size", None) or meta.size or getattr(siblings[filename], "size", None)
    if not sha or not size:
        raise PullError(
            f"the Hub gives no sha256 and size for {filename}",
            hint="charlite only keeps files it can verify; download it by hand and use gguf:PATH",
        )
    return Remote(target.repo, filename, meta.commit_hash or revision, sha, int(size), url)


def _fetch(remote: Remote, part: Path, quiet: bool) -> None:
    """Download ``remote`` into ``part``, resuming from what is there."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    have = part.stat().st_size if part.exists() else 0
    if have > remote.size:
        part.unlink()
        have = 0
    if have == remote.size:
        return
    _disk_check(part.parent, remote.size - have)
    if quiet:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    try:
        with open(part, "ab") as fh:
            http_get(
                remote.url,
                fh,
                resume_size=have,
                headers=build_hf_headers(),
                expected_size=remote.size,
                displayed_filename=Path(remote.filename).name,
            )
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StorageError(
                f"the disk filled up while writing {part}",
                hint="free some space and pull again: it resumes",
            ) from None
        if "Consistency check failed" in str(exc):
            raise PullError(
                f"the download of {remote.filename} ended at the wrong size",
                hint="pull again: it resumes",
            ) from None
        if isinstance(exc, (ConnectionError, TimeoutError)):
            raise _hub_error(exc, Target(remote.repo), constants.ENDPOINT) from None
        raise StorageError(f"cannot write {part}: {exc.strerror or exc}") from None
    except CharliteError:
        raise
    except Exception as exc:
        raise _hub_error(exc, Target(remote.repo), constants.ENDPOINT) from None


def pull(ref: str, *, quiet: bool = False) -> tuple[PulledModel, bool]:
    """Fetch and verify the GGUF ``ref`` names; returns it and whether it was already here."""
    target = parse_ref(ref)
    remote = describe_remote(target)
    name = short_name(target, remote.filename)
    existing = find_pulled(name)
    if existing is not None and existing.sha256 == remote.sha256:
        return existing, True
    staging = ensure_dir(models_dir() / ".downloads" / name)
    part = staging / (Path(remote.filename).name + ".part")
    state = staging / "download.json"
    previous = None
    with contextlib.suppress(Exception):
        previous = read_json(state)
    if not isinstance(previous, dict) or previous.get("sha256") != remote.sha256:
        part.unlink(missing_ok=True)  # a partial file of another version cannot be continued
        write_json_atomic(
            state, {"repo": remote.repo, "file": remote.filename, "sha256": remote.sha256}
        )
    _fetch(remote, part, quiet)
    _verify(remote, part)
    final_dir = ensure_dir(models_dir() / name)
    final = final_dir / Path(remote.filename).name
    os.replace(part, final)
    manifest = {
        "kind": MANIFEST_KIND,
        "format": 1,
        "file": final.name,
        "repo": remote.repo,
        "filename": remote.filename,
        "revision": remote.revision,
        "sha256": remote.sha256,
        "size": remote.size,
        "pulled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json_atomic(final_dir / MANIFEST, manifest)  # written last: now it counts as pulled
    shutil.rmtree(staging, ignore_errors=True)
    found = find_pulled(name)
    if found is None:  # pragma: no cover - the manifest was just written
        raise NotFoundError(f"pulled {final} but cannot read it back")
    return found, False


def _verify(remote: Remote, part: Path) -> None:
    """The sha256 the Hub states and a readable GGUF header, or the partial file goes."""
    digest = file_sha256(part)
    if digest != remote.sha256:
        part.unlink(missing_ok=True)
        raise PullError(
            f"the download of {remote.filename} is corrupt (sha256 {digest[:12]}… is not the "
            f"Hub's {remote.sha256[:12]}…)",
            hint="it was deleted; pull again",
        )
    try:
        check_gguf(part)
    except ModelError as exc:
        part.unlink(missing_ok=True)
        raise PullError(
            f"{remote.filename} matches the Hub's sha256 but is not a readable GGUF ({exc.message})",
            hint="the repository's file itself is broken: pick another",
        ) from None
