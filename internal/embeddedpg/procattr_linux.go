package embeddedpg

import "syscall"

// sysProcAttr puts the server in its own process group (Stop signals the
// group) and asks the kernel to kill it when its parent goes away.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
