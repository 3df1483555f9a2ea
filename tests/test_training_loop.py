"""GracefulStop: a signal during a step only asks for a stop; the loop saves at the step boundary and stops."""

import os
import signal

import pytest

from muon_ad.training import GracefulStop


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=lambda s: s.name)
def test_a_signal_stops_at_the_next_boundary_after_saving(sig):
    before = signal.getsignal(sig)
    saved = []
    with pytest.raises(KeyboardInterrupt), GracefulStop() as stop:
        stop.at_boundary(1, due=False, save=lambda: saved.append(1))  # nothing due, nothing asked: runs on
        os.kill(os.getpid(), sig)  # lands "mid-step": only the flag is set, the step goes on
        saved.append("rest of step 2")
        stop.at_boundary(2, due=False, save=lambda: saved.append(2))
    assert saved == ["rest of step 2", 2]
    assert signal.getsignal(sig) is before  # the previous handler is back


def test_a_second_signal_stops_at_once_without_saving():
    saved = []
    with pytest.raises(KeyboardInterrupt), GracefulStop() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        saved.append("never reached")
    assert saved == [] and stop.requested


def test_what_the_loop_closes_is_closed_on_exit_with_signals_still_caught():
    # A signal while the logs close (torchrun stopping the survivors of a dead rank) only asks for a stop: it
    # must not reach the handler outside, which for SIGTERM would kill the process before it reports.
    outside = []
    previous = signal.signal(signal.SIGTERM, lambda *_: outside.append("reached the outer handler"))

    class SlowLog:
        closed = False

        def close(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            self.closed = True

    log = SlowLog()
    try:
        with pytest.raises(RuntimeError), GracefulStop(closing=[log]) as stop:
            raise RuntimeError("a collective failed")  # cleanup runs on an error too
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert log.closed and stop.requested and outside == []


def test_a_due_checkpoint_is_saved_without_stopping():
    saved = []
    with GracefulStop() as stop:
        stop.at_boundary(4, due=True, save=lambda: saved.append(4))
    assert saved == [4]


def test_progress_is_a_bar_on_a_terminal_and_plain_lines_in_a_log():
    import io

    from tqdm import tqdm

    from muon_ad.training.loop import LineProgress, progress_bar

    log = io.StringIO()  # not a terminal
    bar = progress_bar(200, 0, "AD", stream=log)
    assert isinstance(bar, LineProgress)
    for step in range(200):
        bar.set_postfix(loss=f"{1 / (step + 1):.3f}")
        bar.update()
    bar.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in log.getvalue()  # every 20th step, no carriage-return redraws
    assert lines[0].startswith("AD: 20/200 (") and lines[-1].startswith("AD: 200/200") and "loss=0.005" in lines[-1]
    assert list(progress_bar(desc="bank", iterable=range(5), stream=log)) == list(range(5))

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress_bar(10, 0, "x", stream=Terminal()), tqdm)
