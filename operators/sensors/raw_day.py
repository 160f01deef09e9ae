"""The training DAGs' wait for a raw Criteo day to land, whole."""
from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseSensorOperator
from airflow.sdk.bases.sensor import PokeReturnValue


class RawDaySensor(BaseSensorOperator):
    """Wait for the raw Criteo file of one day (`day_N` or `day_N.gz`) to land whole in the raw folder.

    Whole means (criteo_kernel.landing): on gs://, the object exists (an upload is visible only once
    complete); in a folder, its manifest `day_N.manifest.json` is there and the size matches, or
    (criteo_raw_landing=settle, the default) the file has not changed for criteo_raw_settle_s
    seconds. Returns the URL of the file found. A directory under the day's name fails at once,
    without retry. On timeout the task fails with the exact names it expected and what it saw
    last, so an operator reading the log knows which upload is missing or unfinished.

    :param raw_url: folder (local path or gs://bucket/prefix) where Criteo days land.
    :param day: the Criteo day number N.
    :param landing: settle | manifest: the run's criteo_raw_landing (its plan's `landing`); default settle.
    :param settle_s: seconds a file without a manifest must stay unchanged: the run's criteo_raw_settle_s
        (its plan's `settle_s`); default: the registry's.
    """

    template_fields: Sequence[str] = ("raw_url", "day", "landing", "settle_s")
    ui_color = "#e8d9f7"

    def __init__(self, *, raw_url: str, day: int | str, landing: str | None = None, settle_s: float | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.raw_url = raw_url
        self.day = day
        self.landing = landing
        self.settle_s = settle_s
        self._last = None

    @property
    def hook(self):
        from ..hooks.raw_data import RawDataHook

        return RawDataHook(self.raw_url)

    def candidates(self) -> list[str]:
        return self.hook.candidates(int(self.day))

    def poke(self, context) -> PokeReturnValue | bool:
        from airflow.sdk.exceptions import AirflowFailException

        from ..hooks.raw_data import NotARawDay
        from ..pipeline.config import REGISTRY

        mode = self.landing or REGISTRY["criteo_raw_landing"].default
        settle = float(self.settle_s if self.settle_s is not None else REGISTRY["criteo_raw_settle_s"].default)
        try:
            landed = self.hook.landing(int(self.day), mode, settle)
        except (NotARawDay, ValueError) as exc:
            raise AirflowFailException(str(exc)) from None
        self._last = landed.reason
        if landed.complete:
            self.log.info("raw day landed: %s", landed.reason)
            return PokeReturnValue(is_done=True, xcom_value=landed.url)
        self.log.info("waiting: %s", landed.reason)
        return False

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowSensorTimeout

        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            last = f"; last seen: {self._last}" if self._last else ""
            raise AirflowSensorTimeout(
                f"raw Criteo day {self.day} never arrived whole: expected {' or '.join(self.candidates())} "
                f"(waited {self.timeout:g}s{last}; {exc})") from None
