package main

import (
	"runtime/debug"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=..." (make
// build does, from git describe). Without it, buildVersion reads what the
// go command recorded.
var version = ""

// buildVersion is what --version, the User-Agent and ferry.json report:
// the -ldflags version, else the module version go install records
// (v1.2.3), else "dev"; followed by the commit when the go command
// recorded one (go build in a git checkout), with "modified" when the tree
// had uncommitted changes.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return orDev(version)
	}
	return describeBuild(version, bi)
}

func describeBuild(ldVersion string, bi *debug.BuildInfo) string {
	v := ldVersion
	if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	v = orDev(v)
	var rev string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev == "" || strings.Contains(v, rev[:min(len(rev), 7)]) {
		return v // git describe and pseudo-versions already name the commit
	}
	v += " (commit " + rev[:min(len(rev), 12)]
	if modified {
		v += ", modified"
	}
	return v + ")"
}

func orDev(v string) string {
	if v == "" {
		return "dev"
	}
	return v
}
