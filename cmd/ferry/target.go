package main

import (
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"

	"github.com/ferry-airgap/ferry/push"
)

// pathComponent is the OCI distribution spec's grammar for one component
// of a repository name.
var pathComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$`)

// checkTarget refuses a malformed --to before any request (exit 2): what
// push.ParseTarget refuses, plus a port outside 1-65535 and a prefix with
// an empty or invalid component (host//x, host/-bad), which registries
// would only answer with a 404 or 400 after the upload started.
func checkTarget(to string) error {
	t, err := push.ParseTarget(to)
	if err != nil {
		return usageError{err}
	}
	host, port, err := net.SplitHostPort(t.Registry)
	if err == nil {
		n, perr := strconv.Atoi(port)
		if perr != nil || n < 1 || n > 65535 {
			return usagef("--to %q: port %q is not a number from 1 to 65535", to, port)
		}
		if host == "" {
			return usagef("--to %q: no host before the port", to)
		}
	} else if strings.Contains(strings.Trim(t.Registry, "[]"), ":") && !strings.HasPrefix(t.Registry, "[") {
		return usagef("--to %q: registry %q is not HOST[:PORT]", to, t.Registry)
	}
	if t.Prefix == "" {
		return nil
	}
	for _, c := range strings.Split(t.Prefix, "/") {
		if !pathComponent.MatchString(c) {
			what := fmt.Sprintf("%q is not a valid path component (lowercase letters and digits, separated by ., _, __ or -)", c)
			if c == "" {
				what = "an empty path component (//)"
			}
			return usagef("--to %q: %s", to, what)
		}
	}
	return nil
}
