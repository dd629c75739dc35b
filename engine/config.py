"""The run configuration: one TOML file parsed once into typed, frozen models.

Unknown keys and bad values fail with ``ConfigError``
naming the key and what is allowed. Driver options (``[instrument.options]``)
are validated by the driver's own options model at the composition root.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from engine.errors import ConfigError
from engine.safety import DoseBudget, Polygon, SafetyLimits

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSection(_Strict):
    """``[run]``: naming, output and reproducibility."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9_.-]+$", description="prefix of the run directory name")
    output_dir: Path = Field(Path("runs"), description="where runs/<name>-<timestamp>.zarr go")
    seed: int = Field(0, description="seed of the policy's random generator")
    chunk_rows: int = Field(64, ge=1, le=65536, description="rows per Zarr chunk and per committed block")
    figure: bool = Field(True, description="write the summary figure next to the run")
    pipeline: bool | None = Field(
        None,
        description="decide the next step while the instrument measures the last (one command in flight, "
        "durability of the last overlapping the next acquisition); default: on when the engine connects to "
        "an instrument's server ([instrument] mode = 'connect': a live microscope), off otherwise",
    )


class InstrumentSection(_Strict):
    """``[instrument]``: which instrument and how to reach it."""

    mode: Literal["spawn", "connect", "local"] = Field(
        "spawn",
        description="spawn: start `dualscope serve DRIVER` as a subprocess on a random loopback port; "
        "connect: use a server already running at `endpoint`; local: call the driver in this process",
    )
    driver: str = Field("synthetic", description="driver name for spawn/local")
    endpoint: str = Field("", description="tcp://HOST:PORT of a running server (mode = connect)")
    timeout_s: float = Field(10.0, gt=0, description="seconds to wait for each reply")
    retries: int = Field(2, ge=0, le=100, description="re-sends of the same request id after a timeout")
    image_channel: str = Field("haadf", description="structural image channel to acquire first")
    options: dict[str, Any] = Field(default_factory=dict, description="driver options, checked by the driver")
    client_key: Path | None = Field(
        None, description="connect: this client's .key_secret file (`dualscope keys new`), if the server requires keys"
    )
    server_key: Path | None = Field(None, description="connect: the server's public .key file (with client_key)")


class CandidatesSection(_Strict):
    """``[candidates]``: the grid of probe positions the policy chooses from."""

    stride_px: int = Field(4, ge=1, description="one candidate every stride_px image pixels")
    margin_px: int = Field(2, ge=0, description="keep candidates this far from the image edge")


class ScalariserSection(_Strict):
    """``[policy.scalariser]``: the number to maximise, from each spectrum (axis units)."""

    kind: Literal["band", "peak", "ratio", "target", "loop-area", "user"] = Field(
        "band",
        description="band: integral over [low, high]; peak: peak position in [low, high]; ratio: band A / band B; "
        "target: similarity to a peak at centre with width; loop-area: area of a hysteresis loop; "
        "user: module:function",
    )
    low: float = Field(0.0, description="band / peak window start (band A for ratio; target: channels compared)")
    high: float = Field(1e9, description="band / peak window end (band A for ratio; target: channels compared)")
    low_b: float = Field(0.0, description="band B start (ratio)")
    high_b: float = Field(1e9, description="band B end (ratio)")
    centre: float = Field(0.0, description="target peak centre (target)")
    width: float = Field(1.0, gt=0, description="target peak FWHM (target)")
    function: str = Field("", description="module:function (user)")
    units: str = Field("", description="units of a user function's result")
    log: bool = Field(False, description="maximise the natural log (same ranking; for heavy-tailed positive values)")

    def check_axis(self, values: Any) -> None:
        """Refuse windows that hold no channel of the spectral axis ``values (c,)`` (``window_channels``).

        Raises:
            ConfigError: naming the window and the axis' range.

        Examples:
            >>> ScalariserSection(kind="band", low=0.4, high=0.6).check_axis(np.linspace(0.1, 1.3, 300))
            >>> ScalariserSection(kind="band", low=2.0, high=3.0).check_axis(np.linspace(0.1, 1.3, 300))
            Traceback (most recent call last):
            ...
            engine.errors.ConfigError: window [2, 3] holds no channel of the axis [0.1, 1.3]
        """
        axis = np.asarray(values, dtype=np.float64)
        windows = {"band": [("low", "high")], "peak": [("low", "high")], "target": [("low", "high")]}
        windows["ratio"] = [("low", "high"), ("low_b", "high_b")]
        for lo_key, hi_key in windows.get(self.kind, []):
            window_channels(axis, getattr(self, lo_key), getattr(self, hi_key))


def window_channels(axis: Any, low: float, high: float) -> Any:
    """The channels of ``axis (c,)`` inside ``[low, high]`` (either order), as a mask ``(c,)``.

    Raises:
        ConfigError: the window holds no channel (naming it and the axis' range).

    Examples:
        >>> window_channels(np.linspace(0.0, 1.0, 5), 0.6, 0.3).tolist()
        [False, False, True, False, False]
    """
    values = np.asarray(axis, dtype=np.float64)
    sel = (values >= min(low, high)) & (values <= max(low, high))
    if not sel.any():
        raise ConfigError(
            f"window [{low:g}, {high:g}] holds no channel of the axis [{values.min():g}, {values.max():g}]"
        )
    return sel


class PolicySection(_Strict):
    """``[policy]``: how the next position is chosen."""

    name: Literal["random", "raster", "gp-position", "dualvae-bo", "dualvae-spectral", "dkl"] = "raster"
    batch_size: int = Field(1, ge=1, le=1024, description="positions per measure command")
    acquisition: Literal["log-ei", "noisy-log-ei", "ucb", "max-variance", "thompson"] = Field(
        "log-ei", description="botorch acquisition of the model-based policies"
    )
    initial: int = Field(5, ge=1, description="random measurements before the first model")
    training: Literal["background", "inline", "dask"] = Field(
        "background",
        description="background: refits run on a worker thread and decisions use the latest finished "
        "snapshot (the instrument never waits); inline: each refit finishes before the next decision "
        "(reproducible); dask: refits run on a Dask worker ([training] scheduler), decisions never wait "
        "for them, and a lost worker or scheduler falls back to the background thread",
    )
    refit_every: int = Field(1, ge=1, description="new measurements between model refits")
    wait_for_first_model: bool = Field(
        False,
        description="background training: the first decision after `initial` waits for the first model "
        "instead of choosing at random while it trains (later refits never block)",
    )
    travel_cost: float = Field(
        0.0, ge=0, description="acquisition units subtracted per field-of-view diagonal the probe travels"
    )
    pretrain_steps: int = Field(300, ge=0, description="dualvae-*: image-only training steps before the loop")
    update_steps: int | None = Field(
        None, ge=0, description="dualvae-*: warm-start steps per refit (default 20); dkl: joint CNN+GP steps (60)"
    )
    patch_px: int = Field(16, ge=8, description="dualvae-*, dkl: candidate patch side in image pixels (multiple of 8)")
    latent_with_position: bool = Field(
        True,
        description="dualvae-*, dkl: GP inputs are the image features and the probe position (false: features only)",
    )
    prior_samples: int = Field(
        32, ge=2, le=1024, description="dualvae-spectral: predicted spectra drawn per candidate at each refit"
    )
    prior_as: Literal["residual", "input"] = Field(
        "residual",
        description="dualvae-spectral: residual (the scalarised predicted spectra are the prior, a GP on latent "
        "and position corrects it) or input (their mean is one more GP input)",
    )
    prior_weight: Literal["held-out", "none"] = Field(
        "held-out",
        description="dualvae-spectral, residual: held-out (the prior is scaled by how well its predictions, made "
        "before each spectrum was measured, explain the measured values: 0 turns it off) or none (trusted as is)",
    )
    scalariser: ScalariserSection = ScalariserSection()


class StopSection(_Strict):
    """``[stop]``: when the campaign ends."""

    budget: int = Field(200, ge=1, description="number of spectra to measure")
    max_wall_time_s: float = Field(3600.0, gt=0, description="stop after this many seconds")


class SafetySection(_Strict):
    """``[safety]``: limits checked by the engine before each command (and by a server started with --safety)."""

    soft_limits: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="{axis = [low, high]}: narrower than the instrument's own range"
    )
    max_step: float | None = Field(None, gt=0, description="largest move between consecutive positions")
    forbidden: list[list[tuple[float, float]]] = Field(
        default_factory=list, description="polygons [[x, y], ...] of the x/y plane no position may fall in"
    )
    dose_budget_e_per_nm2: float | None = Field(None, gt=0, description="most electrons per nm² anywhere")
    electrons_per_measurement: float | None = Field(
        None, gt=0, description="electrons of one dwell (beam current × dwell / e); needed with a dose budget"
    )
    probe_radius_nm: float = Field(1.0, gt=0, description="a dwell's dose is spread over this disk")
    cell_nm: float = Field(1.0, gt=0, description="grid pitch of the dose bookkeeping")
    max_refusals: int = Field(20, ge=1, description="refused proposals in a row before the campaign stops")

    def limits(self, axes: list[str]) -> SafetyLimits | None:
        """The ``SafetyLimits`` this section describes for an instrument with ``axes`` (None: no limits)."""
        if (self.dose_budget_e_per_nm2 is None) != (self.electrons_per_measurement is None):
            raise ConfigError("[safety]: dose_budget_e_per_nm2 and electrons_per_measurement go together")
        try:
            dose = None
            if self.dose_budget_e_per_nm2 is not None and self.electrons_per_measurement is not None:
                dose = DoseBudget(
                    self.dose_budget_e_per_nm2, self.electrons_per_measurement, self.probe_radius_nm, self.cell_nm
                )
            polygons = [Polygon(np.asarray(p, dtype=np.float64)) for p in self.forbidden]
            if not (self.soft_limits or self.max_step or polygons or dose):
                return None
            return SafetyLimits(axes, dict(self.soft_limits), self.max_step, polygons, dose)
        except ValueError as exc:
            raise ConfigError(f"[safety]: {exc}") from None


class FaultsSection(_Strict):
    """``[faults]``: what a campaign does when a measurement fails."""

    retries_per_point: int = Field(
        2, ge=0, description="failed measurements of a point before it is given up (0: a fault ends the campaign)"
    )
    max_in_a_row: int = Field(5, ge=1, description="failed measurements in a row that end the campaign cleanly")


class OperatorSection(_Strict):
    """``[operator]``: the control socket (`dualscope ctl`), its keys, and approval mode."""

    approval_timeout_s: float | None = Field(
        None, gt=0, description="each proposed point waits this long for approve / veto / edit (unset: no approval)"
    )
    on_timeout: Literal["veto", "approve", "stop"] = Field(
        "veto", description="what an unanswered proposal becomes: veto (skip it), approve, or stop the campaign"
    )
    endpoint: str = Field(
        "tcp://127.0.0.1:*", description="where the control socket binds; other than loopback only with keys"
    )
    authorised_keys: Path | None = Field(
        None, description="operators' authorised-keys file (ROLE NAME KEY lines); with key: CURVE, names from keys"
    )
    key: Path | None = Field(None, description="the campaign's own .key_secret for the control socket")


class DriftSection(_Strict):
    """``[drift]``: follow the specimen's drift by registering fresh structural images against the first one.

    Every ``every_n`` measurements (or ``every_s`` seconds, whichever comes first) the campaign acquires
    a new frame of the run's image channel, registers it against the reference with sub-pixel phase
    cross-correlation, and from then on sends every probe to its candidate's position plus the
    estimated drift. A registration that fails its quality check is recorded and moves nothing.
    """

    enabled: bool = Field(False, description="track drift (off: probes go where the reference image says)")
    every_n: int | None = Field(10, ge=1, description="measurements between tracking images (none: by time only)")
    every_s: float | None = Field(None, gt=0, description="seconds between tracking images (none: by count only)")
    window_nm: tuple[float, float, float, float] | None = Field(
        None,
        description="[x0, y0, x1, y1] of the reference image, in the axes' units, registered instead of the whole "
        "field (a distinctive, stable feature); it follows the drift. None: the whole field",
    )
    max_shift_nm: float = Field(
        5.0,
        gt=0,
        description="largest plausible move between two tracking frames; more is refused (after k refused frames "
        "in a row, (k + 1) × this)",
    )
    max_error: float = Field(
        0.6, gt=0, le=1, description="largest registration error (0: identical frames, 1: nothing in common) accepted"
    )
    upsample: int = Field(20, ge=1, le=1000, description="sub-pixel precision: 1/upsample of a pixel")

    @model_validator(mode="after")
    def _consistent(self) -> DriftSection:
        if self.enabled and self.every_n is None and self.every_s is None:
            raise ValueError("enabled = true needs every_n or every_s (how often to track)")
        if self.window_nm is not None:
            x0, y0, x1, y1 = self.window_nm
            if not (x1 > x0 and y1 > y0):
                raise ValueError(f"window_nm = {list(self.window_nm)}: need x0 < x1 and y0 < y1")
        return self


class TrainingSection(_Strict):
    """``[training]``: where the model refits run when ``policy.training = "dask"``, and on which device.

    Each refit is one Dask task carrying the data it learns from and the feature model's weights; its
    result (new weights, latents, the fitted GP) comes back as the next snapshot. A worker that dies, a
    scheduler that cannot be reached or a refit that does not come back within ``timeout_s`` sends
    training back to the local thread for the rest of the run, recorded in the run.
    """

    scheduler: str = Field(
        "",
        pattern=r"^(|local|tcp://[^\s]+|tls://[^\s]+)$",
        description="training = 'dask': the scheduler's address (tcp://HOST:8786), or 'local' for a "
        "LocalCluster of one worker process on this machine",
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="torch device of the dual VAE's refits wherever they run: auto (CUDA where the refit runs "
        "has it, else the CPU), cpu, cuda or cuda:N",
    )
    timeout_s: float = Field(
        600.0, gt=0, description="a remote refit not back after this many seconds counts as lost (local fallback)"
    )
    connect_timeout_s: float = Field(10.0, gt=0, description="seconds to wait for the scheduler at the start")


class SafetyFile(BaseModel):
    """A file read for its ``[safety]`` table (a run config, or a file with only that table)."""

    model_config = ConfigDict(extra="ignore")
    safety: SafetySection = SafetySection()


class RunConfig(_Strict):
    """The whole configuration file."""

    run: RunSection = RunSection()
    instrument: InstrumentSection = InstrumentSection()
    candidates: CandidatesSection = CandidatesSection()
    policy: PolicySection = PolicySection()
    stop: StopSection = StopSection()
    safety: SafetySection = SafetySection()
    faults: FaultsSection = FaultsSection()
    operator: OperatorSection = OperatorSection()
    drift: DriftSection = DriftSection()
    training: TrainingSection = TrainingSection()

    @property
    def pipelined(self) -> bool:
        """Whether the campaign decides while the instrument measures.

        ``[run] pipeline`` when given; by default, when the engine connects to an instrument's server
        (``[instrument] mode = "connect"``: a live microscope; decision 0016).

        Examples:
            >>> RunConfig.model_validate({"instrument": {"mode": "connect"}}).pipelined
            True
            >>> RunConfig.model_validate({"instrument": {"mode": "connect"}, "run": {"pipeline": False}}).pipelined
            False
            >>> RunConfig().pipelined  # a simulator the engine spawns
            False
        """
        return self.run.pipeline if self.run.pipeline is not None else self.instrument.mode == "connect"

    @model_validator(mode="after")
    def _training_has_a_scheduler(self) -> RunConfig:
        if self.policy.training == "dask" and not self.training.scheduler:
            raise ValueError(
                "policy.training = 'dask' needs [training] scheduler = 'tcp://HOST:8786' "
                "(or 'local' for a LocalCluster on this machine)"
            )
        return self


def format_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """Turn a pydantic error into lines naming each bad key and what is allowed."""
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, err["loc"][:-1])
            lines.append(f"  {key}: unknown key; allowed here: {', '.join(allowed)}")
        elif not key:  # a check across tables: its message names the keys
            lines.append(f"  {str(err['msg']).removeprefix('Value error, ')}")
        else:
            lines.append(f"  {key}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    current = model
    for part in path:
        field = current.model_fields.get(str(part))
        annotation = field.annotation if field is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return sorted(current.model_fields)


def validate_model(data: Any, model: type[M], source: str) -> M:
    """Validate plain ``data`` as ``model``; errors name the key and the allowed values."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, source)) from None


def parse_model(text: str, model: type[M], source: str) -> M:
    """Parse TOML ``text`` into ``model``; errors name the key and the allowed values."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    return validate_model(data, model, source)


def load_model(path: Path, model: type[M]) -> tuple[M, str]:
    """Read and parse the TOML file at ``path`` as ``model``; returns it and the text (stored in the run)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    return parse_model(text, model, str(path)), text


def parse_config(text: str, source: str = "<config>") -> RunConfig:
    """Parse TOML ``text`` into a ``RunConfig``; errors name the key and the allowed values."""
    return parse_model(text, RunConfig, source)


REQUIRED_SECTIONS = ("instrument", "policy", "stop")
"""Tables a campaign file must have: what measures, what decides, when to stop (``--defaults`` waives it)."""


def load_config(path: Path, *, defaults: bool = False) -> tuple[RunConfig, str]:
    """Read and parse the TOML file at ``path``; returns the config and its text (stored in the run).

    Args:
        path: the TOML file.
        defaults: let missing ``REQUIRED_SECTIONS`` take their defaults (otherwise refused).

    Raises:
        ConfigError: unreadable, invalid, or missing a required table (named).
    """
    config, text = load_model(path, RunConfig)
    missing = [name for name in REQUIRED_SECTIONS if name not in tomllib.loads(text)]
    if missing and not defaults:
        tables = ", ".join(f"[{name}]" for name in missing)
        raise ConfigError(
            f"{path}: missing {tables}; a campaign file says what measures ([instrument]), what decides "
            "([policy]) and when to stop ([stop]); see examples/demo.toml, or pass --defaults to take the "
            "defaults (the synthetic microscope, raster policy, 200 spectra)"
        )
    return config, text


def scalariser_table(band: tuple[float, float] | None, scalariser: str) -> dict[str, Any]:
    """The ``[policy.scalariser]`` table a command line's ``--band LOW:HIGH`` or ``--scalariser TABLE`` gives.

    Args:
        band: the parsed ``--band`` (``parse_window``), or None.
        scalariser: the body of a TOML inline table (``'kind = "peak", low = 0.4, high = 1.0'``), or ''.

    Returns:
        The validated table (``kind = "band"`` with ``low`` and ``high`` for a band).

    Raises:
        ConfigError: both or neither given, not TOML, or not a valid scalariser table (the key named).

    Examples:
        >>> scalariser_table((0.6, 0.7), "")
        {'kind': 'band', 'low': 0.6, 'high': 0.7}
        >>> scalariser_table(None, 'kind = "peak", low = 0.4, high = 1.0')["kind"]
        'peak'
    """
    if band is not None and scalariser:
        raise ConfigError('give --band or --scalariser, not both (--band LOW:HIGH is kind = "band")')
    if band is None and not scalariser:
        raise ConfigError("give --band LOW:HIGH or --scalariser TABLE")
    if band is not None:
        table: dict[str, Any] = {"kind": "band", "low": band[0], "high": band[1]}
    else:
        try:
            table = tomllib.loads(f"t = {{ {scalariser} }}")["t"]
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                f"--scalariser is the body of a TOML inline table, e.g. 'kind = \"peak\"': {exc}"
            ) from None
    validate_model(table, ScalariserSection, "--scalariser")
    return table


def parse_window(text: str, what: str, units: str = "") -> tuple[float, float] | None:
    """A window ``LOW:HIGH`` given on the command line, or None when ``text`` is empty.

    Args:
        text: e.g. ``"0.7:0.9"``.
        what: the option's name, for the error (e.g. ``"--band"``).
        units: the window's units, for the error (e.g. ``"eV"``).

    Raises:
        ConfigError: ``text`` is not two numbers separated by ``:``.

    Examples:
        >>> parse_window("0.7:0.9", "--band")
        (0.7, 0.9)
        >>> parse_window("", "--band") is None
        True
    """
    if not text:
        return None
    try:
        low, high = (float(v) for v in text.split(":"))
    except ValueError:
        in_units = f" in {units}" if units else ""
        raise ConfigError(f"{what} wants LOW:HIGH{in_units}, got {text!r}") from None
    return low, high
