//go:build !linux

package embeddedpg

import "syscall"

// sysProcAttr puts the server in its own process group (Stop signals the
// group). Without Pdeathsig outside Linux, a crashed parent leaves the
// server running until it is stopped by hand.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
