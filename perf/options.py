"""nccl-tests' command line (common.cu ``main``), parsed the way its C code parses it.

* Every nccl-tests option takes a value; ``-h`` prints the usage and exits 0, and so
  does an unknown option (after ``invalid option 'X'``), as getopt_long + nccl-tests do.
* Integers are read like ``strtol(text, NULL, 0)``: ``0x10`` and ``010`` (octal) work, and
  garbage reads as 0. ``-f`` is an integer (``-f 1.5`` is 1, i.e. an additive step).
* Sizes are read like ``sscanf("%lf %1s")``: a number and an optional unit letter
  ``K``/``M``/``G`` (binary, either case); anything else is ``invalid size specified for
  'minbytes'`` on stderr and exit status 255, as is ``minbytes > maxbytes``.
* An unknown ``-d`` / ``-o`` name prints ``invalid type X, defaulting to float .. `` and
  goes on, as nccl-tests does.

Options that only mean something on a GPU or to NCCL (:data:`NO_MEANING_ON_CPU`: ``-t``,
``-g``, ``-p``, ``-y``, ``-G``, ``-R``, ``-x``, ``-D``, ``-V``, ``-M``, ``-I``, ``-K``) are
accepted, so nccl-tests command lines run unchanged; ``--help`` names each and why, and a
non-default value earns a note on stderr saying what happens instead.

Our own options (long only): ``--np``, ``--algo``, ``--transport``, ``--backend``,
``--json``, ``--plot``, ``--vs``, ``--progress``, ``--order``, ``--row_warmup``.
"""

from __future__ import annotations

import getopt
import re
from dataclasses import dataclass, field

from collectives import names

from .colls import DTYPE_NAMES, NCCL_ONLY_OPS, OP_NAMES, have_dtype

SHORT = "t:g:b:e:i:f:n:m:w:N:p:I:K:c:o:d:r:z:y:T:hG:C:a:R:x:D:V:J:S:M:u:"
LONG_NCCL = {
    "nthreads": "t", "ngpus": "g", "minbytes": "b", "maxbytes": "e", "stepbytes": "i", "stepfactor": "f",
    "iters": "n", "agg_iters": "m", "warmup_iters": "w", "run_cycles": "N", "parallel_init": "p",
    "per_iter_timing": "I", "per_iter_skip": "K", "check": "c", "op": "o", "datatype": "d", "root": "r",
    "blocking": "z", "stream_null": "y", "timeout": "T", "cudagraph": "G", "report_cputime": "C",
    "average": "a", "local_register": "R", "cta_policy": "x", "device_implementation": "D",
    "device_cta_count": "V", "output_file": "J", "report_timestamps": "S", "memory": "M", "unalign": "u",
}
LONG_OURS = ("np", "algo", "transport", "backend", "json", "plot", "vs", "progress", "order", "row_warmup")
ORDERS = ("ours", "peers", "alternate")
ALGORITHMS = (*names.ALGORITHMS, "auto", "all")  # all: every algorithm per size (perf.algo_all)
BACKENDS = ("collectives", "mpi", "gloo")


NO_MEANING_ON_CPU: tuple[tuple[str, str, str], ...] = (
    ("t", "nthreads", "ranks are processes here, not threads of one process; use --np N"),
    ("g", "ngpus", "there are no GPUs; every rank is one process on the CPU; use --np N"),
    ("p", "parallel_init", "parallel communicator init of threads: there are no threads (see -t)"),
    ("y", "stream_null", "CUDA streams: a CPU collective runs in the calling thread"),
    ("G", "cudagraph", "CUDA graphs do not exist on the CPU; the timed loop runs as is"),
    ("R", "local_register", "NCCL buffer registration: the library maps what it shares itself"),
    ("x", "cta_policy", "NCCL's CTA policy: there are no kernels"),
    ("D", "device_implementation", "NCCL device-API kernels: there are no kernels"),
    ("V", "device_cta_count", "CTAs of the -D kernels: there are no kernels"),
    ("M", "memory", "GPU memory accounting: there is no GPU memory"),
    ("I", "per_iter_timing", "CUDA-event per-iteration timing: there are no CUDA events"),
    ("K", "per_iter_skip", "samples left out of -I's statistics: there is no -I"),
)
"""(letter, long name, why) of every nccl-tests flag accepted that means nothing on a CPU."""

SAME_ON_CPU: tuple[tuple[str, str], ...] = (
    ("-z 2", "stream sync without a barrier: a CPU call returns when it is done, so 2 is 0"),
    ("-C 1", "launch time: a CPU call returns when it is done, so it is the completion time "
             "(only the header says cputime)"),
)
"""nccl-tests flag values that mean the same as another on a CPU."""


class UsageExit(Exception):
    """Stop before running: print ``stdout``/``stderr`` text and exit with ``code``."""

    def __init__(self, code: int, stdout: str = "", stderr: str = "") -> None:
        super().__init__(stdout or stderr)
        self.code, self.stdout, self.stderr = code, stdout, stderr


@dataclass
class Options:
    """Every flag's value after parsing (nccl-tests' defaults), plus our own and the notes to print."""
    program: str
    argv: list[str] = field(default_factory=list)
    nthreads: int = 1
    ngpus: int = 1
    minbytes: int = 32 << 20
    maxbytes: int = 32 << 20
    stepbytes: int = 1 << 20
    stepfactor: int = 1
    iters: int = 20
    agg_iters: int = 1
    warmup_iters: int = 1
    run_cycles: int = 1
    parallel_init: int = 0
    check: int = 1
    op: str = "sum"  # a name, or "all"
    dtype: str = "float"  # a name, or "all"
    root: int = 0
    blocking: int = 0
    stream_null: int = 0
    timeout: int = 0
    cudagraph: int = 0
    report_cputime: int = 0
    report_timestamps: int = 0
    output_file: str | None = None
    average: int = 1
    local_register: int = 0
    cta_policy: int = -1
    device_implementation: int = 0
    device_cta_count: int = 16
    memory: int = 0
    unalign: int = 0
    per_iter_timing: int = 0
    per_iter_skip: int = 0
    # ours
    np: int | None = None
    algo: str | None = None
    transport: str | None = None
    backend: str = "collectives"
    json: str | None = None
    plot: str | None = None
    vs: list[str] = field(default_factory=list)
    progress: str = "auto"
    order: str = "ours"  # which world runs a row first beside --vs peers (perf.sweep.peers_go_first)
    row_warmup: float = 100.0  # ms of untimed calls before each world's out-of-place cell (perf.sweep.warm_calls)
    notes: list[str] = field(default_factory=list)  # stdout lines before the header (nccl prints these)
    warnings: list[str] = field(default_factory=list)  # stderr notes


def strtol(text: str) -> int:
    """C ``strtol(text, NULL, 0)``: leading blanks, sign, 0x / 0 prefixes; garbage -> 0."""
    m = re.match(r"\s*([+-]?)(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", text)
    if not m:
        return 0
    sign, digits = m.groups()
    if digits[:2].lower() == "0x":
        value = int(digits[2:], 16)
    elif digits.startswith("0") and len(digits) > 1:
        value = int(digits[1:], 8)
    else:
        value = int(digits)
    return -value if sign == "-" else value


_FLOAT = re.compile(r"\s*([+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))\s*(\S?)")


def parse_size(text: str) -> int:
    """nccl-tests' ``parsesize``: bytes, or -1 when the text is not a size."""
    m = _FLOAT.match(text)
    if not m:
        return -1
    number, unit = m.groups()
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(unit.lower())
    if units is None:
        return -1
    value = float(number) * units
    return int(value) if value >= 0 else -1


def usage(program: str) -> str:
    """nccl-tests' usage text for ``program``, then our additions and the flags that mean nothing on a CPU."""
    return (
        f"USAGE: {program} \n\t"
        "[-t,--nthreads <num threads>] \n\t"
        "[-g,--ngpus <gpus per thread>] \n\t"
        "[-b,--minbytes <min size in bytes>] \n\t"
        "[-e,--maxbytes <max size in bytes>] \n\t"
        "[-i,--stepbytes <increment size>] \n\t"
        "[-f,--stepfactor <increment factor>] \n\t"
        "[-n,--iters <iteration count>] \n\t"
        "[-m,--agg_iters <aggregated iteration count>] \n\t"
        "[-w,--warmup_iters <warmup iteration count>] \n\t"
        "[-N,--run_cycles <cycle count> run & print each cycle (default: 1; 0=infinite)] \n\t"
        "[-p,--parallel_init <0/1>] \n\t"
        "[-c,--check <check iteration count>] \n\t"
        "[-o,--op <sum/prod/min/max/avg/all>] \n\t"
        "[-d,--datatype <int8/uint8/int32/uint32/int64/uint64/half/float/double/bfloat16/all>] \n\t"
        "[-r,--root <root>] \n\t"
        "[-z,--blocking <0/1/2/3> 1=barrier after each inner iter (-m), 2=no barrier, "
        "3=wait and barrier after each outer iter (-n)] \n\t"
        "[-y,--stream_null <0/1>] \n\t"
        "[-T,--timeout <time in seconds>] \n\t"
        "[-G,--cudagraph <num graph launches>] \n\t"
        "[-C,--report_cputime <0/1>] \n\t"
        "[-S,--report_timestamps <0/1> report timestamps (default 0)] \n\t"
        "[-J,--output_file <file> write output to filepath, if accessible. Infer type from suffix "
        "(only json supported presently.)] \n\t"
        "[-a,--average <0/1/2/3> report average iteration time <0=RANK0/1=AVG/2=MIN/3=MAX>] \n\t"
        "[-R,--local_register <0/1/2> enable local (1) or symmetric (2) buffer registration on send/recv "
        "buffers (default: disable (0))] \n\t"
        "[-x,--cta_policy <0/1/2> set CTA policy] \n\t"
        "[-D,--device_implementation <implementation number>] \n\t"
        "[-V,--device_cta_count <number>] \n\t"
        "[-M,--memory <0/1> enable memory usage report (default: 0)] \n\t"
        "[-u,--unalign <index of first element> Misalign source and destination buffers (default: 0)] \n\t"
        "[-I,--per_iter_timing <0/1>] \n\t"
        "[-K,--per_iter_skip <count>] \n\t"
        "[-h,--help]\n"
        "collectives additions:\n\t"
        "[--np <N> start N local ranks (processes) and run the test on them] \n\t"
        "[--algo <ring/tree/recursive/direct/hierarchical/auto/all> algorithm of our library (also COLLECTIVES_ALGO); all: each one per size, beside the automatic choice] \n\t"
        "[--transport <shm/tcp/mpi> transport of our library (also COLLECTIVES_TRANSPORT)] \n\t"
        "[--backend <collectives/mpi/gloo> library the table measures (default: collectives)] \n\t"
        "[--vs <mpi,gloo> also run the sweep on these libraries (needs --np), add ratio columns] \n\t"
        "[--json <file> write every row and the environment as JSON] \n\t"
        "[--plot <file.png> plot algbw/busbw against size (needs matplotlib)] \n\t"
        "[--progress <auto/on/off> progress on stderr, a bar (tqdm) or a live line per row "
        "(auto: when stderr is a terminal; stdout is only the table)] \n\t"
        "[--order <ours/peers/alternate> which world runs each row first beside --vs peers "
        "(default: ours)] \n\t"
        "[--row_warmup <ms> untimed calls at each row's size before each world's out-of-place cell, "
        "about this many ms; 0: none (default: 100)] \n"
        + cpu_notes()
    )


def cpu_notes() -> str:
    """The part of the usage that names the flags accepted for nccl-tests' sake which mean
    nothing (or the same as another) on a CPU, and why."""
    width = max(len(f"-{letter},--{name}") for letter, name, _ in NO_MEANING_ON_CPU)
    text = "accepted as nccl-tests does, but meaningless on a CPU (a value other than the default is noted " \
           "on stderr and ignored):\n"
    text += "".join(f"\t{f'-{letter},--{name}':<{width}}  {why}\n" for letter, name, why in NO_MEANING_ON_CPU)
    text += "the same as another on a CPU:\n"
    text += "".join(f"\t{flag:<{width}}  {why}\n" for flag, why in SAME_ON_CPU)
    return text


def parse(argv: list[str], program: str) -> Options:
    """Options from ``argv`` (without the program name); raises UsageExit to stop early."""
    opts = Options(program=program, argv=list(argv))
    longopts = [name + "=" for name in (*LONG_NCCL, *LONG_OURS)] + ["help"]
    try:
        pairs, rest = getopt.gnu_getopt(argv, SHORT, longopts)
    except getopt.GetoptError as exc:
        # getopt_long returns '?' for an unknown option or a missing value, and nccl-tests
        # prints that character; glibc's own complaint goes to stderr.
        raise UsageExit(0, stdout="invalid option '?'\n" + usage(program),
                        stderr=f"{program}: {exc.msg}\n") from None
    if rest:
        opts.warnings.append(f"ignoring arguments that are not options: {' '.join(rest)}")
    for flag, value in pairs:
        name = flag.lstrip("-")
        if flag.startswith("--"):
            if name == "help":
                raise UsageExit(0, stdout=usage(program))
            if name in LONG_OURS:
                _ours(opts, name, value)
                continue
            name = LONG_NCCL[name]
        if name == "h":
            raise UsageExit(0, stdout=usage(program))
        _nccl(opts, name, value)
    if opts.minbytes > opts.maxbytes:
        raise UsageExit(255, stderr=f"invalid sizes for 'minbytes' and 'maxbytes': {opts.minbytes} > {opts.maxbytes}\n")
    if opts.stepfactor <= 1 and opts.stepbytes == 0 and opts.minbytes < opts.maxbytes:
        raise UsageExit(255, stderr="invalid step: stepbytes 0 with stepfactor <= 1 never reaches 'maxbytes'\n")
    _explain(opts)
    return opts


def _nccl(opts: Options, letter: str, value: str) -> None:
    """Apply one nccl-tests flag (by its letter) the way its C code reads the value."""
    sizes = {"b": ("minbytes", "minbytes"), "e": ("maxbytes", "maxbytes"), "i": ("stepbytes", "stepBytes")}
    if letter in sizes:
        attr, label = sizes[letter]
        parsed = parse_size(value)
        if parsed < 0:
            raise UsageExit(255, stderr=f"invalid size specified for '{label}'\n")
        setattr(opts, attr, parsed)
        return
    if letter == "d":
        if value == "all" or (value in DTYPE_NAMES and have_dtype(value)):
            opts.dtype = value
        else:
            why = " (bfloat16 needs the ml_dtypes package)" if value == "bfloat16" else ""
            opts.notes.append(f"invalid type {value}{why}, defaulting to float .. ")
            opts.dtype = "float"
        return
    if letter == "o":
        if value == "all" or value in OP_NAMES:
            opts.op = value
        elif value in NCCL_ONLY_OPS:
            opts.notes.append(f"invalid op {value} (NCCL's pre-multiplied sum has no CPU equivalent here), "
                              "defaulting to sum .. ")
            opts.op = "sum"
        else:
            opts.notes.append(f"invalid op {value}, defaulting to sum .. ")
            opts.op = "sum"
        return
    if letter == "J":
        opts.output_file = value
        return
    attr = {
        "t": "nthreads", "g": "ngpus", "f": "stepfactor", "n": "iters", "m": "agg_iters", "w": "warmup_iters",
        "N": "run_cycles", "p": "parallel_init", "I": "per_iter_timing", "K": "per_iter_skip", "c": "check",
        "r": "root", "z": "blocking", "y": "stream_null", "T": "timeout", "G": "cudagraph",
        "C": "report_cputime", "a": "average", "R": "local_register", "x": "cta_policy",
        "D": "device_implementation", "V": "device_cta_count", "S": "report_timestamps", "M": "memory",
        "u": "unalign",
    }[letter]
    setattr(opts, attr, strtol(value))


def _ours(opts: Options, name: str, value: str) -> None:
    """Apply one of our long options, refusing a bad value (exit 255)."""
    if name == "np":
        n = strtol(value)
        if n < 1:
            raise UsageExit(255, stderr=f"invalid --np {value!r}: needs a number of ranks >= 1\n")
        opts.np = n
    elif name == "algo":
        if value.lower() not in ALGORITHMS:
            raise UsageExit(255, stderr=f"invalid --algo {value!r}: one of {', '.join(ALGORITHMS)}\n")
        opts.algo = value.lower()
    elif name == "transport":
        opts.transport = value.lower()
    elif name == "backend":
        if value not in BACKENDS:
            raise UsageExit(255, stderr=f"invalid --backend {value!r}: one of {', '.join(BACKENDS)}\n")
        opts.backend = value
    elif name == "json":
        opts.json = value
    elif name == "plot":
        opts.plot = value
    elif name == "vs":
        peers = [p.strip().lower() for p in value.split(",") if p.strip()]
        for p in peers:
            if p not in ("mpi", "gloo"):
                raise UsageExit(255, stderr=f"invalid --vs {p!r}: peers are mpi and gloo\n")
        opts.vs = list(dict.fromkeys(opts.vs + peers))
    elif name == "progress":
        if value not in ("auto", "on", "off"):
            raise UsageExit(255, stderr=f"invalid --progress {value!r}: auto, on or off\n")
        opts.progress = value
    elif name == "order":
        if value not in ORDERS:
            raise UsageExit(255, stderr=f"invalid --order {value!r}: {', '.join(ORDERS)}\n")
        opts.order = value
    elif name == "row_warmup":
        try:
            opts.row_warmup = float(value)
        except ValueError:
            opts.row_warmup = -1.0
        if not opts.row_warmup >= 0:
            raise UsageExit(255, stderr=f"invalid --row_warmup {value!r}: milliseconds >= 0\n")


def _explain(opts: Options) -> None:
    """Notes (stderr) for options that have no meaning without GPUs / NCCL, and fixes."""
    w = opts.warnings
    if opts.ngpus != 1:
        w.append(f"-g {opts.ngpus}: there are no GPUs here; every rank is one process on the CPU. "
                 "Start N ranks with --np N (or collectives-run -n N, torchrun, mpiexec). Using -g 1.")
        opts.ngpus = 1
    if opts.nthreads != 1:
        w.append(f"-t {opts.nthreads}: ranks are processes, not threads, here; use --np N. Using -t 1.")
        opts.nthreads = 1
    if opts.cudagraph:
        w.append(f"-G {opts.cudagraph}: CUDA graphs do not exist on the CPU; the timed loop runs as is "
                 "(graph: 0).")
        opts.cudagraph = 0
    for letter, attr, why in NO_MEANING_ON_CPU:
        if letter in "pyRDMIK" and getattr(opts, attr):
            w.append(f"-{letter} {getattr(opts, attr)}: {why}; ignored.")
            setattr(opts, attr, 0)
    if opts.cta_policy != -1:
        w.append(f"-x {opts.cta_policy}: CTA policies are NCCL's; ignored.")
        opts.cta_policy = -1
    if opts.device_cta_count != 16:
        w.append(f"-V {opts.device_cta_count}: CTA counts are NCCL's; ignored.")
    if opts.blocking not in (0, 1, 2, 3):
        w.append(f"-z {opts.blocking}: not one of 0-3; using 0.")
        opts.blocking = 0
    if opts.average not in (0, 1, 2, 3):
        w.append(f"-a {opts.average}: not one of 0-3; using 1 (mean over ranks).")
        opts.average = 1
    if opts.unalign < 0:
        w.append(f"-u {opts.unalign}: must be >= 0; using 0.")
        opts.unalign = 0
    if opts.iters < 0:
        opts.iters = 0
    if opts.agg_iters < 1:
        opts.agg_iters = 1
    if opts.check < 0:
        opts.check = 0
