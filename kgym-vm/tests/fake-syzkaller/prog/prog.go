// Package prog holds what the stand-in shares with syzkaller's layout: the
// git revision the Makefile stamps in, and the call parser.
package prog

import (
	"fmt"
	"strconv"
	"strings"
)

// GitRevision is set by the Makefile (-ldflags -X).
var GitRevision = "unknown"

// Call is one system call of a program: its name (before any `$`) and
// integer arguments.
type Call struct {
	Name string
	Args []uint64
}

// Prog is a parsed program and its text.
type Prog struct {
	Calls []Call
	Text  string
}

// Parse reads a program: one call per line (`[rN = ]name[$variant](args)`),
// `#` lines are comments. Arguments are integers; `&(0xADDR)...` stands for
// the address. Calls not in `known` are an error.
func Parse(text string, known func(string) bool) (*Prog, error) {
	p := &Prog{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if eq := strings.Index(line, " = "); eq >= 0 && !strings.Contains(line[:eq], "(") {
			line = line[eq+3:]
		}
		open := strings.IndexByte(line, '(')
		if open < 0 || !strings.HasSuffix(line, ")") {
			return nil, fmt.Errorf("bad call %q", line)
		}
		name := line[:open]
		if d := strings.IndexByte(name, '$'); d >= 0 {
			name = name[:d]
		}
		if !known(name) {
			return nil, fmt.Errorf("unknown syscall %v", name)
		}
		call := Call{Name: name}
		for _, a := range splitArgs(line[open+1 : len(line)-1]) {
			call.Args = append(call.Args, argValue(a))
		}
		p.Calls = append(p.Calls, call)
		p.Text += line + "\n"
	}
	if len(p.Calls) == 0 {
		return nil, fmt.Errorf("no calls")
	}
	return p, nil
}

func splitArgs(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(', '{', '[', '<':
			depth++
		case ')', '}', ']', '>':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	if rest := strings.TrimSpace(s[start:]); rest != "" {
		out = append(out, rest)
	}
	return out
}

func argValue(a string) uint64 {
	a = strings.TrimPrefix(a, "&(")
	if end := strings.IndexAny(a, ")=/"); end >= 0 {
		a = a[:end]
	}
	v, err := strconv.ParseUint(a, 0, 64)
	if err != nil {
		return 0
	}
	return v
}
