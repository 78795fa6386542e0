"""The fixed list of bad inputs of ``fuzz_inputs.py``, in six groups: config
values (A), command-line arguments (B), config files (C), output locations and resources
(D), damaged run folders (E), damaged sweeps (F).  Each case says how to make the input and
what a correct answer looks like; ``fuzz_inputs.py`` runs and classifies them."""

from __future__ import annotations

import dataclasses
import sys
import tempfile
from pathlib import Path

# Where the damaged-results cases keep their good runs (set by the worker)
FIXTURES = Path(tempfile.gettempdir())

# The smallest complete config file: the one the CLI tests use (tests/helpers.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import TINY_TOML as BASE  # noqa: E402

SWEEP = BASE + "\n[sweep]\nd = [8, 9]\n"


@dataclasses.dataclass
class Case:
    group: str
    name: str
    make: object  # (tmp: Path) -> argv list
    expect: str = "error"  # "error" | "repair" | "report" | "warn"
    check: object = None  # (tmp, out_text, err_text) -> bool: results on disk are consistent
    patch: object = None  # context manager factory applied around main()
    quiet_ok: bool = False  # a repair that needs no message (derived data rebuilt, e.g. a lost index)
    guard: bool = False  # ``check`` guards data or compute: a failed check is a loss


# -- helpers ------------------------------------------------------------------------------
def _cfg(tmp: Path, text: str = BASE, name: str = "c.toml") -> Path:
    p = tmp / name
    p.write_text(text)
    return p


def _run_set(*sets):
    """A ``run`` of the base config with ``--set`` overrides."""

    def make(tmp):
        argv = ["run", str(_cfg(tmp)), "--out", str(tmp / "out")]
        for s in sets:
            argv += ["--set", s]
        return argv

    return make


def _sweep_set(*sets):
    def make(tmp):
        argv = ["sweep", str(_cfg(tmp, SWEEP)), "--out", str(tmp / "sw")]
        for s in sets:
            argv += ["--set", s]
        return argv

    return make


# -- group A: config values ----------------------------------------------------------------
INT_KEYS = ["data.d", "teacher.P", "student.m", "train.steps", "train.batch_size", "log.points", "teacher.activation_degree"]
INT_BAD = ["0", "-1", "1.5", "'x'", "true", "nan", "inf", "[]"]
FLOAT_KEYS = [
    "teacher.beta",
    "train.lr",
    "student.init_scale",
    "train.diverge_bound",
    "analysis.threshold",
    "flow.rtol",
    "flow.atol",
]
FLOAT_BAD = ["-1", "'x'", "true", "nan", "inf", "{a=1}"]
CHOICE_KEYS = [
    "train.engine",
    "train.optimizer",
    "train.schedule",
    "train.dtype",
    "teacher.basis",
    "flow.solver",
    "analysis.observable",
]
CHOICE_BAD = ["'nope'", "1", "true", "['sgd']"]

SPECIAL = [
    # hand-picked bad values: integer limits, underflowing or zero coefficients, degenerate or
    # malformed activations, impossible sizes
    ("train.steps = 2^31", ["train.steps=2147483648"]),
    ("train.steps = 2^63 - 1", ["train.steps=9223372036854775807"]),
    ("train.steps = 2^63 (past TOML's range)", ["train.steps=9223372036854775808"]),
    ("data.d = 2^63 - 1", ["data.d=9223372036854775807"]),
    ("student.m = 2^62", ["student.m=4611686018427387904"]),
    ("train.batch_size = 2^40", ["train.batch_size=1099511627776"]),
    ("teacher.a with a zero", ["teacher.a=[1.0, 0.0]"]),
    ("teacher.a negative", ["teacher.a=[1.0, -0.5]"]),
    ("teacher.a 1e-300 in float32", ["teacher.a=[1.0, 1e-300]"]),
    ("teacher.a 1e300 in float32", ["teacher.a=[1e300, 1.0]"]),
    ("teacher.beta = 1e6 underflows a_p", ["teacher.beta=1e6"]),
    ("teacher.beta = 200 underflows a_p in float32", ["teacher.beta=200.0"]),
    ("teacher.beta list with 1e6", ["teacher.beta=[1.0, 1e6]"]),
    ("activation h0 (constant)", ["teacher.activation='h0'"]),
    ("activation {0 = 1.0} (constant)", ["teacher.activation={0 = 1.0}"]),
    ("student activation h0", ["student.activation='h0'"]),
    ("activation {4 = 'x'}", ["teacher.activation={4 = 'x'}"]),
    ("activation {-1 = 1.0}", ["teacher.activation={-1 = 1.0}"]),
    ("activation {4 = nan}", ["teacher.activation={4 = nan}"]),
    ("activation {4 = 0.0}", ["teacher.activation={4 = 0.0}"]),
    ("activation 'h31'", ["teacher.activation='h31'"]),
    ("activation 1", ["teacher.activation=1"]),
    ("train.lr = 1e-300 in float32", ["train.lr=1e-300"]),
    ("train.lr = 1e39 in float32", ["train.lr=1e39"]),
    ("train.lr list with 1e-300", ["train.lr=[1e-3, 1e-300]"]),
    ("student.init_scale = 1e-300", ["student.init_scale=1e-300"]),
    ("student.init_scale = 1e-25 (r^2 underflows in float32)", ["student.init_scale=1e-25"]),
    ("train.diverge_bound = 1e300 in float32", ["train.diverge_bound=1e300"]),
    ("flow.rtol = 1e-300 (engine flow)", ["train.engine='flow'", "flow.rtol=1e-300"]),
    ("log.overlap = 1", ["log.overlap=1"]),
    ("log.overlap = 0.0", ["log.overlap=0.0"]),
    ("log.overlap = 'yes'", ["log.overlap='yes'"]),
    ("train.progress = 1", ["train.progress=1"]),
    ("train.progress = 'no'", ["train.progress='no'"]),
    ("optimizer_kwargs {b1 = 'x'} (adam)", ["train.optimizer='adam'", "train.optimizer_kwargs={b1 = 'x'}"]),
    ("optimizer_kwargs {nesterov = 1} (sgd)", ["train.optimizer_kwargs={nesterov = 1, momentum = 0.9}"]),
    ("optimizer_kwargs {momentum = 'x'}", ["train.optimizer_kwargs={momentum = 'x'}"]),
    ("optimizer_kwargs {momentum = [1]}", ["train.optimizer_kwargs={momentum = [0.9]}"]),
    ("optimizer_kwargs {eps = true} (adam)", ["train.optimizer='adam'", "train.optimizer_kwargs={eps = true}"]),
    ("optimizer_kwargs {mu_dtype = 'nope'} (adam)", ["train.optimizer='adam'", "train.optimizer_kwargs={mu_dtype = 'nope'}"]),
    ("optimizer_kwargs {learning_rate = 1}", ["train.optimizer_kwargs={learning_rate = 1.0}"]),
    ("optimizer_kwargs = 5", ["train.optimizer_kwargs=5"]),
    ("optimizer 'adam' in engine reduced", ["train.engine='reduced'", "train.optimizer='adam'"]),
    ("optimizer 'adam' in engine flow", ["train.engine='flow'", "train.optimizer='adam'"]),
    ("train.seed = -1", ["train.seed=-1"]),
    ("train.seed = 2^31", ["train.seed=2147483648"]),
    ("train.seed = []", ["train.seed=[]"]),
    ("train.seed = [0, 'x']", ["train.seed=[0, 'x']"]),
    ("train.seed = [[0]]", ["train.seed=[[0]]"]),
    ("teacher.beta = [[1.0]]", ["teacher.beta=[[1.0]]"]),
    ("teacher.P > data.d", ["teacher.P=9"]),
    ("reduced with d < P + m + B", ["train.engine='reduced'", "data.d=4", "teacher.P=2"]),
    ("unknown key", ["train.bogus=1"]),
    ("unknown table", ["nonsense.x=1"]),
    ("table as a value", ["train.lr={a = 1}"]),
    ("teacher.a not a list", ["teacher.a=1.0"]),
    ("teacher.a wrong length", ["teacher.a=[1.0]"]),
    ("teacher.a with a string", ["teacher.a=[1.0, 'x']"]),
]


def group_a() -> list[Case]:
    cases = []
    for key in INT_KEYS:
        for v in INT_BAD:
            cases.append(Case("config value", f"{key} = {v}", _run_set(f"{key}={v}")))
    for key in FLOAT_KEYS:
        for v in FLOAT_BAD:
            cases.append(Case("config value", f"{key} = {v}", _run_set(f"{key}={v}")))
    for key in CHOICE_KEYS:
        for v in CHOICE_BAD:
            cases.append(Case("config value", f"{key} = {v}", _run_set(f"{key}={v}")))
    for name, sets in SPECIAL:
        cases.append(Case("config value", name, _run_set(*sets)))
    # flow has no batch: a batch size is either refused or warned about, never silently dropped
    cases.append(Case("config value", "flow with batch_size = 4", _run_set("train.engine='flow'", "train.batch_size=4"), "warn"))
    return cases


# -- group B: --set syntax and other command-line arguments --------------------------------
def _argv(*args):
    def make(tmp):
        subs = {
            "{cfg}": lambda: _cfg(tmp),
            "{swa}": lambda: _cfg(tmp, SWEEP + '"analysis.threshold" = [0.1, 0.5]\n', "sa.toml"),
            "{sw}": lambda: _cfg(tmp, SWEEP, "s.toml"),
            "{tmp}": lambda: tmp,
        }
        out = []
        for a in args:
            for k, f in subs.items():
                if k in a:
                    a = a.replace(k, str(f()))
            out.append(a)
        return out

    return make


def group_b() -> list[Case]:
    sets = [
        ("no '='", "train.lr"),
        ("empty key", "=1"),
        ("empty value", "train.lr="),
        ("trailing comment", "train.steps=30 # more"),
        ("trailing text", "train.lr=1e-3 foo"),
        ("trailing bracket", "train.seed=[0, 1]]"),
        ("unclosed list", "train.seed=[0, 1"),
        ("comma list without brackets", "train.seed=0,1"),
        ("newline injecting a key", "train.steps=30\nlr = 5.0"),
        ("three-part key", "train.lr.x=1"),
        ("one-part key", "lr=1"),
        ("unclosed table", "teacher.activation={4 = 1.0"),
        ("unclosed string", "train.optimizer='adam"),
    ]
    cases = [Case("--set syntax", name, _run_set(s)) for name, s in sets]
    other = [
        ("--shard 0/2", ["sweep", "{sw}", "--out", "{tmp}/sw", "--shard", "0/2"]),
        ("--shard 2/0", ["sweep", "{sw}", "--out", "{tmp}/sw", "--shard", "2/0"]),
        ("--shard 1/2/3", ["sweep", "{sw}", "--out", "{tmp}/sw", "--shard", "1/2/3"]),
        ("--shard -1/2", ["sweep", "{sw}", "--out", "{tmp}/sw", "--shard=-1/2"]),
        ("sweep an analysis key", ["sweep", "{swa}", "--out", "{tmp}/sw"]),
        ("sweep an analysis alias", ["sweep", "{sw}", "--out", "{tmp}/sw", "--set", "sweep.threshold=[0.1, 0.5]"]),
        ("sweep value not a list", ["sweep", "{sw}", "--out", "{tmp}/sw", "--set", "sweep.d=8"]),
        ("sweep a bad point", ["sweep", "{sw}", "--out", "{tmp}/sw", "--set", "sweep.d=[8, 'x']"]),
        ("sweep steps = 2^31", ["sweep", "{sw}", "--out", "{tmp}/sw", "--set", "sweep.steps=[20, 2147483648]"]),
        ("sweep zip with different keys", ["sweep", "{sw}", "--out", "{tmp}/sw", "--set", "sweep.zip=[{m = 2}, {P = 2}]"]),
        ("analyze --threshold 2", ["analyze", "{tmp}", "--threshold", "2"]),
        ("analyze --threshold nan", ["analyze", "{tmp}", "--threshold", "nan"]),
        ("analyze a missing folder", ["analyze", "{tmp}/nope"]),
        ("analyze a file", ["analyze", "{cfg}"]),
    ]
    cases += [Case("arguments", name, _argv(*a)) for name, a in other]
    return cases


# -- group C: config files -----------------------------------------------------------------
def _file_case(content: bytes | None, kind: str = "file"):
    def make(tmp):
        p = tmp / "c.toml"
        if kind == "dir":
            p.mkdir()
        elif kind == "missing":
            pass
        else:
            p.write_bytes(content)
        return ["run", str(p), "--out", str(tmp / "out")]

    return make


def group_c() -> list[Case]:
    files = [
        ("latin-1 bytes", BASE.encode().replace(b"P = 2", b"P = 2 # \xe9t\xe9")),
        ("binary garbage", bytes(range(256)) * 4),
        ("UTF-16 with BOM", BASE.encode("utf-16")),
        ("a NUL byte", BASE.encode() + b"\x00"),
        ("TOML syntax error", b"[teacher\nP = 2"),
        ("duplicate key", b"[teacher]\nP = 2\nP = 3\n"),
        ("duplicate table", b"[teacher]\nP = 2\n[teacher]\nbeta = 1.0\n"),
        ("an array of tables", b"[[teacher]]\nP = 2\n"),
        ("a table that is a value", b"teacher = 5\n"),
        ("float steps 1e400", BASE.replace("steps = 20", "steps = 1e400").encode()),
    ]
    cases = [Case("config file", name, _file_case(b)) for name, b in files]
    cases.append(Case("config file", "a directory", _file_case(None, "dir")))
    cases.append(Case("config file", "a missing file", _file_case(None, "missing")))
    return cases
