package harness

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// killWithParent makes the registry die with the test binary, even when the
// binary is killed before its cleanups run.
func killWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// processCPU is the user and system CPU time process pid has used so far
// (from /proc/PID/stat, in clock ticks of 10 ms), 0 when it cannot tell.
func processCPU(pid int) time.Duration {
	f := statFields(pid)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+s) * 10 * time.Millisecond
}

// statFields returns the fields of /proc/PID/stat after the command name
// (field 3 onwards), nil when it cannot be read. The command name (field
// 2) may hold spaces: fields are counted after its closing parenthesis.
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	return strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
}

// treeCPU is the CPU time of process pid and all its descendants, living
// or gone: its own user and system time, its cutime and cstime (the
// children it has waited for, as PostgreSQL's postmaster does for every
// backend that ends with its connection), and treeCPU of each child alive
// now (/proc/PID/task/*/children). A child that ends between two readings
// moves from the second term to the first, so differences of readings
// count it once.
func treeCPU(pid int) time.Duration {
	f := statFields(pid)
	if len(f) < 15 {
		return 0
	}
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		v, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += v
	}
	total := time.Duration(ticks) * 10 * time.Millisecond
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, task := range tasks {
		b, err := os.ReadFile(task)
		if err != nil {
			continue
		}
		for _, c := range strings.Fields(string(b)) {
			if child, err := strconv.Atoi(c); err == nil {
				total += treeCPU(child)
			}
		}
	}
	return total
}

// unmountDetach lazily unmounts path.
func unmountDetach(path string) { _ = syscall.Unmount(path, syscall.MNT_DETACH) }
