"""The training DAGs' wait for a raw Criteo day to land."""
from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseSensorOperator
from airflow.sdk.bases.sensor import PokeReturnValue


class RawDaySensor(BaseSensorOperator):
    """Wait for the raw Criteo file of one day (`day_N` or `day_N.gz`) to land in the raw folder.

    Returns the URL of the file found. On timeout the task fails with the exact names it expected,
    so an operator reading the log knows which upload is missing.

    :param raw_url: folder (local path or gs://bucket/prefix) where Criteo days land.
    :param day: the Criteo day number N.
    """

    template_fields: Sequence[str] = ("raw_url", "day")
    ui_color = "#e8d9f7"

    def __init__(self, *, raw_url: str, day: int | str, **kwargs):
        super().__init__(**kwargs)
        self.raw_url = raw_url
        self.day = day

    @property
    def hook(self):
        from ..hooks.raw_data import RawDataHook

        return RawDataHook(self.raw_url)

    def candidates(self) -> list[str]:
        return self.hook.candidates(int(self.day))

    def poke(self, context) -> PokeReturnValue | bool:
        url = self.hook.find_day(int(self.day))
        if url is not None:
            self.log.info("found raw day %s", url)
            return PokeReturnValue(is_done=True, xcom_value=url)
        self.log.info("waiting for %s", " or ".join(self.candidates()))
        return False

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowSensorTimeout

        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(
                f"raw Criteo day {self.day} never arrived: expected {' or '.join(self.candidates())} "
                f"(waited {self.timeout:g}s; {exc})") from None
