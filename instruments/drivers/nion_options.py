"""Options of the Nion driver (importable without the Nion packages)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class NionOptions(BaseModel):
    """How to find and run the Nion scan device and EELS camera."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    usim: bool = Field(False, description="start Nion's simulated STEM (nionswift-usim) in this process")
    device_modules: tuple[str, ...] = Field(
        (), description="modules whose run() registers the lab's Nion devices (a real microscope's plug-ins)"
    )
    scan_id: str = Field("", description="hardware source id of the scan device (default: the only scan device)")
    eels_id: str = Field("", description="hardware source id of the EELS camera (default: the camera of type eels)")
    image_channel: str = Field("HAADF", description="scan channel of the structural image")
    image_pixels: int = Field(256, ge=8, le=8192, description="pixels per side of the structural image frame")
    pixel_time_us: float = Field(2.0, gt=0, description="scan dwell per image pixel")
    fov_nm: float = Field(0.0, ge=0, description="scan field of view (0: keep the instrument's)")
    exposure_ms: float = Field(10.0, gt=0, description="EELS camera exposure per frame")
    frames: int = Field(1, ge=1, le=1000, description="camera frames summed per spectrum")
    blank_between: bool = Field(True, description="blank the beam between measurements when the microscope can")
    timeout_s: float = Field(30.0, gt=0, description="longest wait for one frame")
