"""docker/Dockerfile, docker/compose.yaml and docs/deploy.md against the real ``crossfid`` command.

No Docker engine is needed: the files are parsed, and every ``crossfid ...`` they run is
resolved against the typer app (groups, sub-commands, options), so a renamed command or
option breaks this test rather than a deployment.
"""

from __future__ import annotations

import json
import re
import shlex
import urllib.parse
from importlib.metadata import entry_points
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML (installed with dask) is needed to read compose.yaml")

REPO = Path(__file__).resolve().parents[1]
COMPOSE_PATH = REPO / "docker" / "compose.yaml"
DOCKERFILE_PATH = REPO / "docker" / "Dockerfile"
DEPLOY_DOC = REPO / "docs" / "deploy.md"

#: what crossfid reads (crossfid/config.py)
CROSSFID_ENV = {
    "CROSSFID_DATABASE_URL",
    "CROSSFID_HOME",
    "CROSSFID_DASK_SCHEDULER",
    "MP_API_KEY",
    "CROSSFID_READER_PASSWORD",
}
#: what docker/initdb/ reads inside the postgres container
INITDB = REPO / "docker" / "initdb" / "10-crossfid-roles.sh"
INITDB_ENV = {"CROSSFID_APP_PASSWORD"}
#: what the postgres image reads
POSTGRES_ENV = {
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_PASSWORD_FILE",
    "POSTGRES_DB",
    "POSTGRES_INITDB_ARGS",
    "POSTGRES_INITDB_WALDIR",
    "POSTGRES_HOST_AUTH_METHOD",
    "PGDATA",
}
#: the interpreter's own (unbuffered output, so `docker logs` shows the long-lived refresh as it runs)
PYTHON_ENV = {"PYTHONUNBUFFERED"}

COMPOSE = yaml.safe_load(COMPOSE_PATH.read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
EXPECTED_SERVICES = {"postgres", "dask-scheduler", "dask-worker", "crossfid", "leaderboard"}


# --------------------------------------------------------------------------- helpers


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    logical, current = [], ""
    for line in DOCKERFILE_PATH.read_text().splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        logical.append(current)
        current = ""
    result = []
    for text in logical:
        instruction, _, arguments = text.partition(" ")
        result.append((instruction.upper(), arguments.strip()))
    return result


def _dockerfile(instruction: str) -> list[str]:
    return [args for name, args in _dockerfile_instructions() if name == instruction]


def _exec_form(instruction: str) -> list[str]:
    values = _dockerfile(instruction)
    assert len(values) == 1, f"one {instruction} expected, found {values}"
    parsed = json.loads(values[0])  # exec (JSON) form: no shell between docker and crossfid, signals reach it
    assert isinstance(parsed, list) and all(isinstance(v, str) for v in parsed)
    return parsed


def _dockerfile_env() -> dict[str, str]:
    env = {}
    for args in _dockerfile("ENV"):
        tokens = shlex.split(args)
        if tokens and "=" not in tokens[0]:  # legacy `ENV NAME value`
            env[tokens[0]] = " ".join(tokens[1:])
            continue
        for token in tokens:
            name, _, value = token.partition("=")
            env[name] = value
    return env


def _as_list(value) -> list[str]:
    if value is None:
        return []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def _argv(service: dict) -> list[str]:
    """What the container runs: compose's entrypoint/command over the image's ENTRYPOINT/CMD.

    As in Docker, setting ``entrypoint`` in compose drops the image's CMD.
    """
    if "entrypoint" in service:
        return _as_list(service["entrypoint"]) + _as_list(service.get("command"))
    command = _as_list(service["command"]) if "command" in service else _exec_form("CMD")
    return _exec_form("ENTRYPOINT") + command


def _environment(service: dict) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {item.partition("=")[0]: (item.partition("=")[2] if "=" in item else None) for item in env}
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def _uses_crossfid_image(service: dict) -> bool:
    return service.get("image", "").startswith("crossfid") or "build" in service


@pytest.fixture(scope="module")
def cli():
    import typer

    from crossfid.cli import app

    return typer.main.get_command(app)


def _names(command) -> list[str]:
    return sorted(command.commands)


def _options(command) -> dict[str, object]:
    """Option strings of a command → the parameter (typer ≥0.16 vendors click: no isinstance checks)."""
    options = {"--help": None}
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option":
            for opt in [*param.opts, *param.secondary_opts]:
                options[opt] = param
    return options


def _takes_value(param) -> bool:
    return param is not None and not getattr(param, "is_flag", False) and not getattr(param, "count", False)


def resolve_crossfid(cli, args: list[str]) -> list[str]:
    """Check ``crossfid ARGS`` against the CLI: every sub-command exists, every option belongs to the command it
    follows; returns the command path. Stops at the first positional argument of a leaf command."""
    command, path, i = cli, [], 0
    while i < len(args):
        arg = args[i]
        where = " ".join(["crossfid", *path])
        if arg.startswith("-"):
            name = arg.split("=", 1)[0]
            options = _options(command)
            assert name in options, f"`{where}` has no option {name}; it has {sorted(options)}"
            i += 2 if ("=" not in arg and _takes_value(options[name])) else 1
            continue
        if not hasattr(command, "commands"):
            break  # a positional argument of the command
        assert arg in command.commands, f"`{where}` has no command {arg!r}; it has {_names(command)}"
        command = command.commands[arg]
        path.append(arg)
        i += 1
    return path


def _is_group(cli, path: list[str]) -> bool:
    command = cli
    for name in path:
        command = command.commands[name]
    return hasattr(command, "commands")


# --------------------------------------------------------------------------- compose


def test_compose_has_the_services():
    assert set(SERVICES) >= EXPECTED_SERVICES
    postgres = SERVICES["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    assert "pg_isready" in " ".join(_as_list(postgres["healthcheck"]["test"]))
    mounts = [v for s in SERVICES.values() for v in s.get("volumes", [])]
    named = {v.split(":", 1)[0] for v in mounts if not v.startswith((".", "/", "~"))}
    assert named <= set(COMPOSE.get("volumes") or {}), "every named volume is declared"


def test_one_service_builds_the_image_the_others_use():
    builders = [name for name, s in SERVICES.items() if "build" in s]
    assert len(builders) == 1
    build = SERVICES[builders[0]]["build"]
    assert (COMPOSE_PATH.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE_PATH
    images = {s["image"] for s in SERVICES.values() if _uses_crossfid_image(s)}
    assert images == {SERVICES[builders[0]]["image"]}


CROSSFID_SERVICES = sorted(n for n, s in SERVICES.items() if _uses_crossfid_image(s) and _argv(s)[0] == "crossfid")


def test_the_checker_catches_wrong_commands(cli):
    assert resolve_crossfid(cli, ["--debug", "db", "init"]) == ["db", "init"]
    assert resolve_crossfid(cli, ["dataset", "show", "mp-r2scan", "--help"]) == ["dataset", "show"]
    with pytest.raises(AssertionError, match="no command 'int'"):
        resolve_crossfid(cli, ["db", "int"])
    with pytest.raises(AssertionError, match="no option --evry"):
        resolve_crossfid(cli, ["train", "--evry", "6h"])
    with pytest.raises(AssertionError, match="no option --split"):
        resolve_crossfid(cli, ["--split", "x", "train"])  # an option of train given to the root


@pytest.mark.parametrize("name", CROSSFID_SERVICES)
def test_compose_crossfid_commands_exist(cli, name):
    argv = _argv(SERVICES[name])
    path = resolve_crossfid(cli, argv[1:])
    assert path, f"{name} runs bare `crossfid`"
    assert not _is_group(cli, path), f"{name} runs the group `crossfid {' '.join(path)}`, which only prints help"


def test_compose_runs_the_intended_commands():
    assert CROSSFID_SERVICES == ["crossfid", "leaderboard"]
    assert _argv(SERVICES["crossfid"])[:3] == ["crossfid", "db", "init"]
    assert _argv(SERVICES["leaderboard"]) == ["crossfid", "leaderboard", "refresh", "--every", "6h"]
    assert SERVICES["leaderboard"]["restart"] == "unless-stopped"
    assert _argv(SERVICES["dask-scheduler"])[:2] == ["dask", "scheduler"]
    assert _argv(SERVICES["dask-worker"])[:3] == ["dask", "worker", "tcp://dask-scheduler:8786"]


def test_dask_commands_and_options_exist():
    commands = {ep.name: ep for ep in entry_points(group="dask_cli")}
    for name in ("dask-scheduler", "dask-worker"):
        argv = _argv(SERVICES[name])
        assert argv[0] == "dask" and argv[1] in commands, f"`dask {argv[1]}` is not a dask command"
        options = _options(commands[argv[1]].load())
        for arg in argv[2:]:
            if arg.startswith("-"):
                assert arg.split("=", 1)[0] in options, f"`dask {argv[1]}` has no option {arg}"


def test_workers_scale_and_find_the_scheduler():
    worker, scheduler = SERVICES["dask-worker"], SERVICES["dask-scheduler"]
    assert "container_name" not in worker and not worker.get("ports"), "a fixed name or host port prevents --scale"
    address = _argv(worker)[2]
    assert address == _environment(worker)["CROSSFID_DASK_SCHEDULER"]
    host, port = urllib.parse.urlsplit(address).hostname, urllib.parse.urlsplit(address).port
    assert host == "dask-scheduler" and port == 8786
    assert any(str(p).endswith(":8786:8786") for p in scheduler["ports"])
    assert "healthcheck" in scheduler


def test_environment_variables_are_ones_that_are_read():
    config_source = "".join((REPO / "crossfid" / f).read_text() for f in ("config.py", "db/readonly.py"))
    assert all(name in config_source for name in CROSSFID_ENV)
    assert all(name in INITDB.read_text() for name in INITDB_ENV)
    for name, service in SERVICES.items():
        env = set(_environment(service))
        allowed = POSTGRES_ENV | INITDB_ENV if service.get("image", "").startswith("postgres") else CROSSFID_ENV
        assert env <= allowed, f"{name} sets {sorted(env - allowed)}, which nothing reads"
    assert set(_dockerfile_env()) <= CROSSFID_ENV | PYTHON_ENV


def test_crossfid_services_share_one_configuration():
    postgres = _environment(SERVICES["postgres"])
    for name, service in SERVICES.items():
        if not _uses_crossfid_image(service) or name == "dask-scheduler":
            continue
        env = _environment(service)
        assert set(env) >= {"CROSSFID_DATABASE_URL", "CROSSFID_DASK_SCHEDULER", "CROSSFID_HOME"}, name
        url = urllib.parse.urlsplit(env["CROSSFID_DATABASE_URL"])
        assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432
        # the application's role is created by initdb/ without superuser rights; POSTGRES_USER is the superuser
        assert url.username == "crossfid" != postgres["POSTGRES_USER"] and url.path == f"/{postgres['POSTGRES_DB']}"
        assert url.password == postgres["CROSSFID_APP_PASSWORD"]
        assert env["CROSSFID_HOME"] == _dockerfile_env()["CROSSFID_HOME"] == "/data"
        assert any(v.endswith(":/data") for v in service.get("volumes", [])), f"{name} keeps /data on a volume"
        depends = service.get("depends_on") or {}
        assert "postgres" in depends


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_entrypoint_and_cmd_name_real_commands(cli):
    entrypoint, cmd = _exec_form("ENTRYPOINT"), _exec_form("CMD")
    assert entrypoint == ["crossfid"]
    pyproject = (REPO / "pyproject.toml").read_text()
    assert re.search(r'^crossfid\s*=\s*"crossfid\.cli:main"', pyproject, re.M), "crossfid is the console script"
    resolve_crossfid(cli, cmd)


def test_dockerfile_copies_files_that_exist():
    for args in _dockerfile("COPY"):
        tokens = [t for t in shlex.split(args) if not t.startswith("--")]
        for source in tokens[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"


# --------------------------------------------------------------------------- docs/deploy.md


def _doc_crossfid_commands() -> list[list[str]]:
    """Argument lists of every crossfid invocation in the shell, ini and crontab blocks of docs/deploy.md."""
    text = DEPLOY_DOC.read_text()
    commands = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"^\s*Exec\w*=", "", line)
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split, lexer.commenters = True, "#"
            try:
                tokens = list(lexer)
            except ValueError:
                continue
            start = 0  # index where a simple command starts
            for i, token in enumerate(tokens):
                if token and set(token) <= set("();<>|&"):
                    start = i + 1
                    continue
                at_start = i == start or all("=" in t and not t.startswith("-") for t in tokens[start:i])
                is_crossfid = token.endswith("/bin/crossfid") or (
                    token == "crossfid" and (at_start or tokens[i - 1] == "--rm")
                )
                if is_crossfid:
                    args = []
                    for t in tokens[i + 1 :]:
                        if set(t) <= set("();<>|&"):
                            break
                        args.append(t)
                    commands.append(args)
    return commands


def test_deploy_doc_names_real_commands(cli):
    commands = _doc_crossfid_commands()
    assert len(commands) >= 5
    paths = {" ".join(resolve_crossfid(cli, args)) for args in commands}
    assert {"db init", "leaderboard refresh", "train"} <= paths
