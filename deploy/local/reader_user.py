"""The local ClickHouse's users: ``default`` (full rights, no password, loopback) and the read
side's ``runstream_reader``, defined by the very file compose mounts.

One source of truth: ``deploy/compose/clickhouse/users.xml`` (profile ``runstream_reader`` with
readonly=2, limits and constraints; quota ``runstream_reader``; the user with ``GRANT SELECT ON
runstream.*`` only, so no ``file()``, ``url()``, ``remote()``, INSERT, DDL or SYSTEM) is copied
byte for byte into the local server's ``users.d/``, next to a ``users.xml`` that defines
``default`` as clickhouse-local's built-in users configuration does. Its password comes from the
environment variable ``CLICKHOUSE_READER_PASSWORD`` (``<password from_env=...>``), which the
launcher sets for the server process from a password generated once per stack home and kept in
``<home>/clickhouse/reader.password`` (mode 0600).

clickhouse-local (what chdb-core serves) reads a users configuration when ``config.xml`` names it
in ``<users_config>``: users_xml storage, with profiles, constraints, quotas and grants enforced
on its HTTP and TCP listeners as on clickhouse-server (checked by tests/test_reader_user.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from runstream.settings import Settings

READER_USER = "runstream_reader"
PASSWORD_ENV = "CLICKHOUSE_READER_PASSWORD"
# The reader's definition, shared with compose (and mirrored by the Kubernetes notes).
DEPLOY_USERS_XML = Path(__file__).resolve().parent.parent / "compose" / "clickhouse" / "users.xml"
DEPLOY_DATABASE = "runstream"  # the database deploy's grants name

USERS_XML = "users.xml"
USERS_D = "users.d"
READER_XML = "runstream.xml"  # the compose file's name in users.d/, as compose mounts it
DATABASE_XML = "zz-database.xml"  # the reader's grants for another database than runstream
PASSWORD_FILE = "reader.password"

# clickhouse-local's own users configuration (LocalServer::setupUsers), with the networks
# narrowed to loopback: the server listens on loopback only, and `default` has no password.
_DEFAULT_USERS = """\
<!-- Written by runstream dev (runstream/deploy/local/reader_user.py); rewritten at each start.
     `default`: clickhouse-local's built-in user, full rights, no password, loopback only: the
     sink, migrations and tests use it. The reader comes from users.d/runstream.xml. -->
<clickhouse>
  <profiles><default/></profiles>
  <users>
    <default>
      <password></password>
      <networks><ip>127.0.0.0/8</ip><ip>::1</ip></networks>
      <profile>default</profile>
      <quota>default</quota>
      <named_collection_control>1</named_collection_control>
    </default>
  </users>
  <quotas><default/></quotas>
</clickhouse>
"""

_GRANTS = re.compile(r"<grants>(.*?)</grants>", re.S)
_USERS_CONFIG = re.compile(r"<users_config>([^<]+)</users_config>")
_HTTP_PORT = re.compile(r"<http_port>(\d+)</http_port>")


def password_path(home: Path) -> Path:
    """Where the stack of ``home`` keeps the reader's password (kept across down and up)."""
    return home / "clickhouse" / PASSWORD_FILE


def ensure_password(home: Path) -> str:
    """The reader's password of this stack home, generated on first use (mode 0600)."""
    path = password_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text(encoding="utf-8").strip()


def database_grants(database: str) -> str:
    """A users.d file giving the reader deploy's grants on ``database`` instead of runstream's.

    The grants are deploy's own, with the database renamed: ``<grants replace="replace">``
    replaces the list of the file before it (ClickHouse merges users.d files element by element).
    """
    text = DEPLOY_USERS_XML.read_text(encoding="utf-8")
    match = _GRANTS.search(text)
    if match is None:
        raise ValueError(f"{DEPLOY_USERS_XML} has no <grants> for {READER_USER}")
    body = re.sub(r"<!--.*?-->\s*", "", match.group(1), flags=re.S)
    body = body.replace(f" ON {DEPLOY_DATABASE}.", f" ON {database}.")
    return (
        "<!-- Written by runstream dev: deploy's grants (users.d/runstream.xml) for the database "
        f"{database}. -->\n<clickhouse>\n  <users>\n    <{READER_USER}>\n"
        f'      <grants replace="replace">{body}</grants>\n'
        f"    </{READER_USER}>\n  </users>\n</clickhouse>\n"
    )


def write_users_config(run_dir: Path, database: str) -> Path:
    """Write ``users.xml`` and ``users.d/`` into ``run_dir``; the path for ``<users_config>``."""
    users_d = run_dir / USERS_D
    users_d.mkdir(parents=True, exist_ok=True)
    (run_dir / USERS_XML).write_text(_DEFAULT_USERS, encoding="utf-8")
    (users_d / READER_XML).write_bytes(DEPLOY_USERS_XML.read_bytes())
    extra = users_d / DATABASE_XML
    if database == DEPLOY_DATABASE:
        extra.unlink(missing_ok=True)
    else:
        extra.write_text(database_grants(database), encoding="utf-8")
    return run_dir / USERS_XML


def granted_database(run_dir: Path) -> str:
    """The database the reader of the users configuration in ``run_dir`` may read."""
    try:
        text = (run_dir / USERS_D / DATABASE_XML).read_text(encoding="utf-8")
    except FileNotFoundError:
        return DEPLOY_DATABASE
    match = re.search(r"GRANT SELECT ON ([A-Za-z0-9_]+)\.\*", text)
    return match.group(1) if match else ""


def local_reader(settings: Settings) -> tuple[str, str] | None:
    """``(user, password)`` of the reader of the local stack in ``settings.home`` when that
    stack serves ``settings.clickhouse_url`` with a reader (its config.xml names a users
    configuration and has the URL's port) that may read ``settings.clickhouse_database``; None
    otherwise (another server or database, or a stack started before the reader existed)."""
    parts = urlsplit(settings.clickhouse_url)
    if parts.username:
        return None  # the URL names its user: the caller asked for that one
    run_dir = settings.home / "run" / "clickhouse"
    try:
        config = (run_dir / "config.xml").read_text(encoding="utf-8")
        password = password_path(settings.home).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    port = _HTTP_PORT.search(config)
    if not _USERS_CONFIG.search(config) or port is None or not password:
        return None
    if int(port.group(1)) != settings.clickhouse_host_port[1]:
        return None
    if granted_database(run_dir) != settings.clickhouse_database:
        return None  # e.g. the tests' own databases on the stack's server: `default` reads them
    return READER_USER, password
