package prog

import "runtime"

// SyscallNumbers: the system calls the stand-in knows, for the build's
// architecture (amd64 or 386).
var SyscallNumbers = map[string]map[string]uintptr{
	"getpid": {"amd64": 39, "386": 20},
	"write":  {"amd64": 1, "386": 4},
	"close":  {"amd64": 3, "386": 6},
	"kill":   {"amd64": 62, "386": 37},
	"prctl":  {"amd64": 157, "386": 172},
	"reboot": {"amd64": 169, "386": 88},
}

// Number is the system call number of `name` on this architecture.
func Number(name string) (uintptr, bool) {
	nr, ok := SyscallNumbers[name][runtime.GOARCH]
	return nr, ok
}
