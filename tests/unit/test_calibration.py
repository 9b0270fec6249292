"""The run's own proof of what a TSC tick is: a loop of known instruction count in the RT guest."""

import pytest

from orchestrator import measure


class FakeGuest:
    """The RT guest's console: answers `rtagent calibrate` with a fixed line."""

    def __init__(self, reply):
        self.reply = reply
        self.lines = []

    def command(self, line, done, timeout, to_file=None):
        self.lines.append(line)
        return self.reply


def test_one_tick_per_instruction_passes_and_reports_the_ratio():
    guest = FakeGuest("rtagent calibrate 200000\nRTAGENT-CALIBRATE n=400000 base=52 loop=400080\n")
    cal = measure.calibrate(guest, "instructions")
    assert guest.lines == [f"rtagent calibrate {measure.CALIBRATION_LOOP}"]
    assert cal["ok"] and cal["checked"] and cal["ticks"] == 400028 and cal["read_overhead_ticks"] == 52
    assert cal["ticks_per_instruction"] == pytest.approx(1.00007)


def test_a_tick_that_is_not_an_instruction_fails_the_run():
    guest = FakeGuest("RTAGENT-CALIBRATE n=400000 base=52 loop=401000\n")  # 0.24 % off
    with pytest.raises(measure.MeasureError, match=r"calibration failed: a loop of 400000 instructions .* read 400948"):
        measure.calibrate(guest, "instructions")


def test_host_timing_reports_without_checking():
    cal = measure.calibrate(FakeGuest("RTAGENT-CALIBRATE n=400000 base=40 loop=164000\n"), "host")
    assert cal["ok"] and not cal["checked"] and cal["ticks_per_instruction"] == pytest.approx(0.4099)


def test_no_result_line_is_an_error():
    with pytest.raises(measure.MeasureError, match="printed no result"):
        measure.calibrate(FakeGuest("RTAGENT-ERROR tsccal failed: not found\n"), "instructions")
