"""The live view's page: one Bokeh document per browser tab, refreshed from the run and the campaign."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, DataRange1d, LinearColorMapper, Range1d
from bokeh.models.annotations import ColorBar
from bokeh.models.ui import UIElement
from bokeh.models.widgets import Button, Div
from bokeh.plotting import figure
from numpy.typing import NDArray

from engine.decisions import PropertyMap
from engine.errors import DualscopeError
from engine.view._link import BUTTONS, CampaignLink
from engine.view._picture import RunPicture, read_picture

_SIZE = 380
"""Pixels per side of the square panels."""


class LivePage:
    """The panels of one tab and how a refresh updates them.

    Args:
        doc: the Bokeh document of the tab.
        path: the run shown.
        link: the campaign running it (``NoCampaign`` for a finished run).
        band: ``LOW:HIGH`` to show that window's integral instead of the run's own property.
        refresh_s: seconds between refreshes.
        truth: a digital twin's noise-free spectra at every candidate ``(m, c)``: the page then also
            draws the discovery curve (the twin's top 1 % by the property, found after k measurements).

    The page shows the structural image with the measured points in their order, the model's mean
    and standard deviation over the candidates, the latest spectra, the property and the best so
    far against the measurement number, the decision table and the operator actions; with an
    operator's role, the pause / resume / stop / approve / veto buttons (an observer gets none).
    """

    def __init__(
        self,
        doc: Document,
        path: Path,
        link: CampaignLink,
        band: str = "",
        refresh_s: float = 1.0,
        truth: NDArray[np.floating] | None = None,
    ):
        self.doc, self.path, self.link, self.band, self.truth = doc, path, link, band, truth
        self._n_drawn, self._map_key, self._image_drawn = -1, (-2, -1), False
        self.header = Div(text=f"<b>{html.escape(path.name)}</b>: reading…", name="header", width=3 * _SIZE)
        self.answer = Div(text="", name="answer", width=3 * _SIZE)
        self.buttons = {name: Button(label=name.capitalize(), name=f"button-{name}", width=90) for name in BUTTONS}
        for name, button in self.buttons.items():
            button.on_click(lambda name=name: self._press(name))
        self.button_row = row(name="buttons")
        self._build_panels()
        doc.title = f"dualscope: {path.name}"
        doc.add_root(
            column(
                self.header,
                self.button_row,
                self.answer,
                row(self.image_fig, self.mean_fig, self.std_fig),
                row(self.spectra_fig, self.scalar_fig, *([self.discovery_fig] if truth is not None else [])),
                row(self.table, self.actions_table),
            )
        )
        self.refresh()
        doc.add_periodic_callback(self.refresh, int(refresh_s * 1000))

    # ------------------------------------------------------------------ panels
    def _build_panels(self) -> None:
        self.order_map = LinearColorMapper(palette="Viridis256", low=0, high=1)
        self.mean_map = LinearColorMapper(palette="Magma256", low=0, high=1)
        self.std_map = LinearColorMapper(palette="Cividis256", low=0, high=1)
        self.image_src = ColumnDataSource({"image": [], "x": [], "y": [], "dw": [], "dh": []})
        self.points_src = ColumnDataSource({"x": [], "y": [], "order": [], "step": [], "value": []}, name="points")
        self.map_src = ColumnDataSource({"x": [], "y": [], "mean": [], "std": []}, name="map")
        self.spectra_src = ColumnDataSource({"xs": [], "ys": [], "step": [], "colour": []})
        self.scalar_src = ColumnDataSource({"i": [], "value": [], "best": []})

        self.image_fig = self._map_figure("image and measured points (colour: order)")
        self.image_fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.image_src, palette="Greys256")
        self.image_fig.scatter(
            "x", "y", source=self.points_src, size=7, line_color="white",
            fill_color={"field": "order", "transform": self.order_map},
        )  # fmt: skip
        self.image_fig.add_layout(ColorBar(color_mapper=self.order_map, title="measurement #"), "right")
        self.mean_fig = self._map_figure("model mean over the candidates")
        self.std_fig = self._map_figure("model standard deviation")
        for fig, field, mapper in ((self.mean_fig, "mean", self.mean_map), (self.std_fig, "std", self.std_map)):
            fig.scatter("x", "y", source=self.map_src, marker="square", size=6, line_color=None,
                        fill_color={"field": field, "transform": mapper})  # fmt: skip
            fig.add_layout(ColorBar(color_mapper=mapper, title=""), "right")
        self.spectra_fig = figure(
            title="latest spectra", width=int(1.2 * _SIZE), height=_SIZE, x_axis_label="", y_axis_label=""
        )
        self.spectra_fig.multi_line("xs", "ys", source=self.spectra_src, line_color="colour", line_width=1.5)
        self.scalar_fig = figure(
            title="property per measurement, and the best so far", width=int(1.2 * _SIZE), height=_SIZE,
            x_axis_label="measurement #", y_axis_label="",
        )  # fmt: skip
        self.scalar_fig.scatter("i", "value", source=self.scalar_src, size=4, legend_label="measured")
        self.scalar_fig.line("i", "best", source=self.scalar_src, color="firebrick", legend_label="best so far")
        self.scalar_fig.legend.location = "bottom_right"
        self.discovery_src = ColumnDataSource({"i": [], "found": []}, name="discovery")
        self.discovery_fig = figure(
            title="discovery (against the twin's truth)", width=_SIZE, height=_SIZE,
            x_axis_label="measurement #", y_axis_label="fraction of the top 1 % found",
            y_range=Range1d(start=0.0, end=1.02),
        )  # fmt: skip
        self.discovery_fig.line("i", "found", source=self.discovery_src, line_width=2)
        # plain HTML tables: Bokeh's DataTable stops redrawing once its row count stops changing
        self.table = Div(text=_table(_DECISION_COLUMNS, []), name="decisions", width=int(1.7 * _SIZE))
        self.actions_table = Div(text=_table(_ACTION_COLUMNS, []), name="actions", width=int(1.3 * _SIZE))

    @staticmethod
    def _map_figure(title: str) -> Any:
        # image rows run downwards, as on the microscope's screen
        return figure(title=title, width=_SIZE, height=_SIZE, match_aspect=True, y_range=DataRange1d(flipped=True))

    # ----------------------------------------------------------------- refresh
    def refresh(self) -> None:
        """Read the run and ask the campaign; redraw what changed (called every ``refresh_s``)."""
        try:
            picture = read_picture(self.path, self.band, truth=self.truth)
        except DualscopeError as exc:
            self.header.text = f"<b>{html.escape(self.path.name)}</b>: cannot read the run: {html.escape(str(exc))}"
            return
        status = self.link.status()
        self._header(picture, status)
        self._show_buttons(status)
        if picture.n != self._n_drawn:
            self._draw_rows(picture)
        if status is not None:
            self._draw_map(picture, self.link.property_map())

    def _header(self, picture: RunPicture, status: dict[str, Any] | None) -> None:
        name = html.escape(self.path.name)
        if status is None:
            state = "finished" if picture.status == "closed" else f"not running ({picture.status})"
            if picture.stop_reason:
                state += f": {html.escape(picture.stop_reason)}"
        else:
            state = "stopping" if status.get("stopping") else "paused" if status.get("holding") else (
                "pausing after this measurement" if status.get("paused") else "running")  # fmt: skip
            if status.get("awaiting_approval") is not None:
                state += f"; awaiting approval of {status['awaiting_approval']}"
            state += f"; you are {html.escape(str(status.get('role', '?')))}"
        self.header.text = (
            f"<b>{name}</b>: <span class='state'>{state}</span>; <span class='count'>{picture.n}</span> spectra; "
            f"property: {html.escape(picture.property_label)}"
        )

    def _show_buttons(self, status: dict[str, Any] | None) -> None:
        operator = status is not None and status.get("role") == "operator"
        wanted: list[UIElement] = list(self.buttons.values()) if operator else []
        if list(self.button_row.children) != wanted:
            self.button_row.children = wanted  # an observer's page has no buttons at all
        if operator and status is not None:
            awaiting = status.get("awaiting_approval") is not None
            self.buttons["approve"].disabled = self.buttons["veto"].disabled = not awaiting
            self.buttons["pause"].disabled = bool(status.get("paused"))
            self.buttons["resume"].disabled = not status.get("paused")

    def _press(self, command: str) -> None:
        try:
            status = self.link.send(command)
        except DualscopeError as exc:
            self.answer.text = f"<span class='refused'>{command}: {html.escape(str(exc))}</span>"
            return
        self.answer.text = f"{command}: done; {status.get('n_recorded', 0)} spectra recorded, step {status.get('step')}"
        self.refresh()

    def _draw_rows(self, picture: RunPicture) -> None:
        self._n_drawn = picture.n
        x_label, y_label = (f"{n} ({u})" for n, u in zip(picture.axis_names, picture.axis_units, strict=True))
        for fig in (self.image_fig, self.mean_fig, self.std_fig):
            fig.xaxis.axis_label, fig.yaxis.axis_label = x_label, y_label
        if picture.image is not None and not self._image_drawn:
            img = picture.image
            y, x = img.coords()
            self.image_src.data = {"image": [np.asarray(img.data, np.float32)], "x": [float(x[0])], "y": [float(y[0])],
                                   "dw": [float(x[-1] - x[0]) or 1.0], "dh": [float(y[-1] - y[0]) or 1.0]}  # fmt: skip
            self._image_drawn = True
        order = np.arange(picture.n)
        self.order_map.high = max(picture.n - 1, 1)
        self.points_src.data = {"x": picture.xy[:, 0], "y": picture.xy[:, 1], "order": order,
                                "step": picture.steps, "value": picture.scalar}  # fmt: skip
        self.spectra_fig.xaxis.axis_label = picture.spectral_label
        self.spectra_fig.yaxis.axis_label = picture.signal
        k = len(picture.latest)
        shades = [f"rgba(31, 119, 180, {0.25 + 0.75 * (i + 1) / k:.2f})" for i in range(k)]
        self.spectra_src.data = {"xs": [picture.spectral_values] * k, "ys": list(picture.latest),
                                 "step": picture.latest_steps, "colour": shades}  # fmt: skip
        self.scalar_fig.yaxis.axis_label = picture.property_label
        self.scalar_src.data = {"i": order, "value": _plain(picture.scalar), "best": _plain(picture.best_so_far)}
        self.table.text = _table(_DECISION_COLUMNS, picture.rows)
        if picture.discovery is not None:
            self.discovery_src.data = {"i": order, "found": picture.discovery}
            self.discovery_fig.yaxis.axis_label = f"fraction of the top {picture.top_size} candidates found"
        actions = [{"time": _utc(a.get("time")), "who": a.get("who", ""), "action": a.get("action", ""),
                    "details": _details(a)} for a in picture.actions]  # fmt: skip
        self.actions_table.text = _table(_ACTION_COLUMNS, actions)

    def _draw_map(self, picture: RunPicture, found: PropertyMap | None) -> None:
        key = (found.version, found.n_obs) if found is not None else (-1, -1)
        if key == self._map_key:
            return
        self._map_key = key
        if found is None or found.mean.shape[0] != picture.candidates_xy.shape[0]:
            return
        self.map_src.data = {"x": picture.candidates_xy[:, 0], "y": picture.candidates_xy[:, 1],
                             "mean": _plain(found.mean), "std": _plain(found.std)}  # fmt: skip
        for mapper, values in ((self.mean_map, found.mean), (self.std_map, found.std)):
            finite = values[np.isfinite(values)]
            if finite.size:
                mapper.low, mapper.high = float(finite.min()), float(max(finite.max(), finite.min() + 1e-12))
        self.mean_fig.title.text = f"model v{found.version} mean ({found.n_obs} observations)"
        self.std_fig.title.text = f"model v{found.version} standard deviation"
        for fig in (self.mean_fig, self.std_fig):
            bar = fig.right[0]
            if isinstance(bar, ColorBar):
                bar.title = picture.property_label


_DECISION_COLUMNS = (("step", "step"), ("policy", "policy"), ("acquisition", "acquisition value"),
                     ("model", "model version"), ("decide_ms", "decide (ms)"), ("measure_ms", "measure (ms)"),
                     ("record_ms", "record (ms)"))  # fmt: skip
_ACTION_COLUMNS = (("time", "time (UTC)"), ("who", "who"), ("action", "action"), ("details", "details"))


def _table(columns: tuple[tuple[str, str], ...], rows: list[dict[str, Any]]) -> str:
    """An HTML table of ``rows`` (newest first) under the ``(key, title)`` columns, every cell escaped."""

    def cell(key: str, value: Any) -> str:
        if isinstance(value, float):
            return "–" if not np.isfinite(value) else f"{value:.1f}" if key.endswith("_ms") else f"{value:.4g}"
        return html.escape(str(value))

    head = "".join(f"<th style='text-align:left;padding:2px 8px'>{html.escape(t)}</th>" for _, t in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:1px 8px'>{cell(k, r.get(k, ''))}</td>" for k, _ in columns) + "</tr>"
        for r in rows
    )
    return f"<table style='border-collapse:collapse;font-size:12px'><tr>{head}</tr>{body}</table>"


def _plain(values: np.ndarray) -> np.ndarray:
    """NaN as NaN for Bokeh (it sends them as such); float64 for its serialiser."""
    return np.asarray(values, np.float64)


def _utc(stamp: Any) -> str:
    """``HH:MM:SS`` of seconds since the epoch, UTC."""
    try:
        return datetime.fromtimestamp(float(stamp), UTC).strftime("%H:%M:%S")
    except (TypeError, ValueError, OverflowError):
        return ""


def _details(action: dict[str, Any]) -> str:
    """An action's arguments as text (position, scalariser, reason)."""
    skip = {"time", "who", "action"}
    return ", ".join(f"{k}={v}" for k, v in action.items() if k not in skip and v not in (None, "", {}))
