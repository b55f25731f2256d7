//go:build !linux

package harness

import (
	"os/exec"
	"time"
)

func killWithParent(*exec.Cmd) {}

func processCPU(int) time.Duration { return 0 }

func treeCPU(int) time.Duration { return 0 }

func unmountDetach(string) {}
