package push

import (
	"github.com/ferry-airgap/ferry/internal/registry"
)

// TargetHost connects to a target registry with ferry's credential order
// for it: --username (with its password) first, then logins (the mapping
// files' target auth), then --auth-file and the docker keychain. import
// and inventory reach the target through it.
func TargetHost(c *registry.Client, kc *registry.Keychain, host, username, password string, logins []registry.Login) (*registry.Host, error) {
	if username != "" {
		logins = append([]registry.Login{{Host: host, Username: username, Password: password, From: "--username"}}, logins...)
	}
	auth, err := kc.Resolve(host, logins...)
	if err != nil {
		return nil, err
	}
	return c.Host(host, auth)
}
