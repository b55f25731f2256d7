package harness

import (
	"os/exec"
	"syscall"
)

// killWithParent makes the registry die with the test binary, even when the
// binary is killed before its cleanups run.
func killWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
