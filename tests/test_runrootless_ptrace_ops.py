"""runrootless.ptrace_ops: ptrace(2) through ctypes, on a real child."""

import os
import signal
import subprocess
import sys

import pytest

from runrootless import ptrace_ops as pt


def test_seize_interrupt_registers_and_errors_on_a_real_child():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        pt.seize(child.pid, pt.PTRACE_O_TRACESYSGOOD | pt.PTRACE_O_EXITKILL)
        pt.interrupt(child.pid)
        _, status = os.waitpid(child.pid, 0)
        assert os.WIFSTOPPED(status) and status >> 16 == pt.PTRACE_EVENT_STOP
        regs = pt.get_regs(child.pid, pt.Regs())
        assert regs.rip != 0 and regs.rsp != 0
        # a register written comes back as written (restored before resuming)
        saved = pt.Regs.from_buffer_copy(regs)
        regs.r15 = 0x1234
        pt.set_regs(child.pid, regs)
        assert pt.get_regs(child.pid, pt.Regs()).r15 == 0x1234
        pt.set_regs(child.pid, saved)
        pt.syscall(child.pid)  # on to its next syscall stop: the nanosleep it was in, restarted
        _, status = os.waitpid(child.pid, 0)
        assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP | 0x80
        assert pt.syscall_info(child.pid)[0] in (pt.PTRACE_SYSCALL_INFO_ENTRY, pt.PTRACE_SYSCALL_INFO_EXIT)
        pt.detach(child.pid)
        with pytest.raises(ProcessLookupError):  # no longer our tracee: ESRCH
            pt.cont(child.pid)
    finally:
        child.kill()
        child.wait()
