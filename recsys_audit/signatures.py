"""SSH signatures (SSHSIG, namespace ``recsys-audit``) made and checked by the system's OpenSSH ``ssh-keygen``.

Nothing here is a format of the kit's own: keys are OpenSSH Ed25519 keys (a key file, passphrase-protected or not,
or a key held by ``ssh-agent``), signatures are what ``ssh-keygen -Y sign`` writes, and trust is an
``allowed_signers`` file as git uses for SSH commit signing, e.g.::

    rita@example.com namespaces="recsys-audit" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA… rita@example.com

so a signature can be checked by hand with ``ssh-keygen -Y verify`` as well as by ``recsys-audit verify``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

NAMESPACE = "recsys-audit"
KEY_TYPE = "ssh-ed25519"
TIMEOUT_S = 10  # every ssh-keygen call that does not wait for a person
PROMPT_TIMEOUT_S = 300  # signing with a key whose passphrase is typed at the terminal
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


class SignatureError(Exception):
    """A key, signature or trust file that cannot be used; the message is one line and says what to do."""


def ssh_keygen() -> str:
    path = shutil.which("ssh-keygen")
    if path is None:
        raise SignatureError("ssh-keygen not found — install OpenSSH, e.g. 'apt-get install openssh-client'")
    return path


def _run(
    args: list[str],
    *,
    data: bytes | None = None,
    timeout: float = TIMEOUT_S,
    prompt_at_terminal: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """ssh-keygen with ``args``. Unless ``prompt_at_terminal``, it runs in a new session with no terminal, so it can
    never wait for a person: a passphrase, if any, comes from ``data`` on stdin."""
    try:
        return subprocess.run(
            [ssh_keygen(), *args],
            input=data if not prompt_at_terminal else None,
            stdin=None if data is not None or prompt_at_terminal else subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            start_new_session=not prompt_at_terminal,
            env={k: v for k, v in os.environ.items() if k not in {"SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "DISPLAY"}}
            if not prompt_at_terminal
            else None,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SignatureError(
            f"ssh-keygen {args[0]} {args[1] if len(args) > 1 else ''}: no answer within {timeout:g} s"
        ) from None


_PROMPT = re.compile(r"^Enter passphrase[^:]*:\s*")


def _last_line(output: bytes) -> str:
    """ssh-keygen's last message, without its passphrase prompt and progress lines."""
    lines = [_PROMPT.sub("", line).strip() for line in output.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line and not line.startswith(("Signing file", "Write signature"))]
    return lines[-1] if lines else "no message"


# --- keys ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicKey:
    text: str  # "ssh-ed25519 AAAA… comment"
    fingerprint: str  # SHA256:…

    @property
    def blob(self) -> str:
        return self.text.split()[1]

    @property
    def comment(self) -> str:
        parts = self.text.split(maxsplit=2)
        return parts[2] if len(parts) > 2 else ""

    def allowed_signers_line(self, principal: str) -> str:
        """The line that makes this key a trusted signer of audits as ``principal``."""
        return f'{principal} namespaces="{NAMESPACE}" {KEY_TYPE} {self.blob}'


def _key_kind(key: Path) -> str:
    """What a key file holds, from its first bytes: ``private`` (an OpenSSH or PEM private key), ``public`` (one
    OpenSSH public key line) or ``other``; never more of it is read, and nothing of it is quoted."""
    with key.open("rb") as handle:
        head = handle.read(64)
    if head.startswith(b"-----BEGIN ") and b"PRIVATE KEY" in head:
        return "private"
    if head.startswith((b"ssh-", b"ecdsa-sha2-", b"sk-")):
        return "public"
    return "other"


def public_key_path(key: Path) -> Path:
    """The public half of a key: ``KEY`` itself when it is a public key (a ``.pub`` file, a key held by ssh-agent),
    else ``KEY.pub``."""
    key = Path(key)
    if key.suffix == ".pub" or (key.is_file() and _key_kind(key) == "public"):
        return key
    return key.with_name(key.name + ".pub")


def check_key(key: Path) -> None:
    """Refuse a ``--key`` that cannot sign, saying why in terms of the file given: missing, a public key without an
    agent to hold its private half, not a key at all, or a private key others can read."""
    key = Path(key)
    try:
        kind = _key_kind(key)
    except FileNotFoundError:
        raise SignatureError(
            f"{key}: no such key file — create one with 'recsys-audit keygen {key}', or pass KEY.pub of a key held by "
            "ssh-agent"
        ) from None
    except OSError as exc:
        raise SignatureError(f"{key}: cannot be read ({exc.strerror})") from None
    if kind == "public":
        if not os.environ.get("SSH_AUTH_SOCK"):
            private = key.with_suffix("") if key.suffix == ".pub" else None
            instead = f" ({private})" if private is not None and private.is_file() else ""
            raise SignatureError(
                f"{key} is a public key: pass the private key{instead} to --key — a public key signs only through "
                "ssh-agent holding its private half (ssh-add the private key), and SSH_AUTH_SOCK is not set"
            )
        return
    if kind == "other":
        raise SignatureError(
            f"{key}: not an SSH private key — pass the private key file 'recsys-audit keygen' wrote (its public half "
            "is KEY.pub)"
        )
    if key.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SignatureError(f"{key}: private key is readable by others — run 'chmod 600 {key}'")


def read_public_key(path: Path) -> PublicKey:
    """An OpenSSH Ed25519 public key file and its fingerprint."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise SignatureError(f"{path}: no such public key file — keep KEY.pub beside the key") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SignatureError(f"{path}: not an OpenSSH public key ({exc})") from None
    if not text.startswith(KEY_TYPE + " ") or len(text.splitlines()) != 1:
        found = text.split()[0] if text.split() else "nothing"
        raise SignatureError(
            f"{path}: {found} is not an Ed25519 key — create one with 'recsys-audit keygen' (ssh-keygen -t ed25519)"
        )
    done = _run(["-l", "-E", "sha256", "-f", str(path)])
    match = _FINGERPRINT.search(done.stdout.decode("ascii", "replace"))
    if done.returncode != 0 or match is None:
        raise SignatureError(f"{path}: not an OpenSSH public key ({_last_line(done.stderr)})")
    return PublicKey(text, match.group(0))


def generate_key(path: Path, comment: str, *, passphrase: str | None = None) -> PublicKey:
    """``ssh-keygen -t ed25519``: ``path`` (mode 0600) and ``path.pub``. Without ``passphrase``, ssh-keygen asks for
    one at the terminal; ``""`` means none."""
    path = Path(path)
    for existing in (path, public_key_path(path)):
        if existing.exists() or existing.is_symlink():
            raise SignatureError(f"{existing} exists — choose another path or remove it first")
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["-q", "-t", "ed25519", "-C", comment, "-f", str(path)]
    if passphrase is None:
        done = _run(args, prompt_at_terminal=True, timeout=PROMPT_TIMEOUT_S)
    else:
        done = _run([*args, "-N", passphrase])
    if done.returncode != 0:
        raise SignatureError(f"ssh-keygen could not create {path}: {_last_line(done.stderr)}")
    return read_public_key(public_key_path(path))


# --- signing ---------------------------------------------------------------------------------------------------


def sign_file(path: Path, key: Path, *, passphrase: str | None = None, prompt_at_terminal: bool = False) -> Path:
    """Sign ``path`` with ``ssh-keygen -Y sign -n recsys-audit``; returns ``path.sig``.

    ``key`` is a private key file, or a public key file ``KEY.pub`` whose key ssh-agent holds (``SSH_AUTH_SOCK``).
    A passphrase-protected key file needs ``passphrase``, or ``prompt_at_terminal`` to let ssh-keygen ask for it.
    """
    key = Path(key)
    check_key(key)
    signature = path.with_name(path.name + ".sig")
    signature.unlink(missing_ok=True)  # ssh-keygen asks before overwriting
    args = ["-Y", "sign", "-f", str(key), "-n", NAMESPACE, str(path)]
    if prompt_at_terminal and passphrase is None:
        done = _run(args, prompt_at_terminal=True, timeout=PROMPT_TIMEOUT_S)
    else:
        done = _run(args, data=(passphrase + "\n").encode() if passphrase is not None else None)
    if done.returncode != 0 or not signature.is_file():
        message = _last_line(done.stderr)
        if "passphrase" in message.lower():
            message += " — give the key's passphrase, or add the key to ssh-agent and pass KEY.pub"
        elif "agent" in message.lower() or public_key_path(key) == key:
            message += f" — is the key of {key} loaded ('ssh-add -l')?"
        signature.unlink(missing_ok=True)
        raise SignatureError(f"ssh-keygen could not sign with {key}: {message}")
    return signature


# --- verifying -------------------------------------------------------------------------------------------------


def _verify_time(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y%m%d%H%M%SZ")


def verify_command(principal: str, at: dt.datetime, allowed_signers: str = "allowed_signers") -> str:
    """The one-line shell command that checks a run's sign-off by hand, run inside the run directory."""
    return (
        f"ssh-keygen -Y verify -f {allowed_signers} -I {principal} -n {NAMESPACE} -s signoff.json.sig "
        f"-Overify-time={_verify_time(at)} < signoff.json"
    )


@dataclass(frozen=True)
class Verified:
    principal: str
    fingerprint: str


def verify(payload: bytes, signature: bytes, allowed_signers: Path, principal: str, signed_at: dt.datetime) -> Verified:
    """Check that ``signature`` is a ``recsys-audit`` signature over ``payload`` by a key that ``allowed_signers``
    trusts as ``principal`` (at the signing time, as git does). Raises SignatureError naming what does not hold."""
    allowed_signers = Path(allowed_signers)
    if not allowed_signers.is_file():
        raise SignatureError(f"{allowed_signers}: no such allowed_signers file")
    with tempfile.TemporaryDirectory(prefix="recsys-audit-verify-") as folder:
        sig_path = Path(folder) / "signoff.json.sig"
        sig_path.write_bytes(signature)  # the bytes already read: ssh-keygen never opens the run directory
        when = f"-Overify-time={_verify_time(signed_at)}"
        args = ["-Y", "verify", "-f", str(allowed_signers), "-I", principal, "-n", NAMESPACE, "-s", str(sig_path)]
        done = _run([*args, when], data=payload)
        if done.returncode == 0:
            match = _FINGERPRINT.search(done.stdout.decode("utf-8", "replace"))
            return Verified(principal, match.group(0) if match else "")
        # Why not: an invalid signature, an untrusted key, or a key trusted under another name.
        check = _run(["-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(sig_path)], data=payload)
        if check.returncode != 0:
            raise SignatureError(
                f"signoff.json.sig: not a valid {NAMESPACE} signature over signoff.json ({_last_line(check.stderr)})"
            )
        match = _FINGERPRINT.search(check.stdout.decode("utf-8", "replace"))
        fingerprint = match.group(0) if match else "?"
        found = _run(["-Y", "find-principals", "-f", str(allowed_signers), "-s", str(sig_path), when])
        principals = found.stdout.decode("utf-8", "replace").split() if found.returncode == 0 else []
    if not principals:
        raise SignatureError(
            f"signer: the key that signed ({fingerprint}) is not a trusted signer in {allowed_signers} "
            f"(for namespace {NAMESPACE} at {signed_at:%Y-%m-%d %H:%M} UTC)"
        )
    if principal not in principals:
        raise SignatureError(
            f"signer: the record names {principal!r}, but {allowed_signers} trusts key {fingerprint} only as "
            f"{', '.join(principals)}"
        )
    raise SignatureError(f"signer: ssh-keygen refused the signature of {principal}: {_last_line(done.stderr)}")
