package policy

import _ "embed"

//go:embed default.yaml
var defaultPolicy []byte

// DefaultFile is the name diagnostics use for the built-in policy.
const DefaultFile = "<built-in>"

// Default returns the source of the built-in policy: a two-port box with wan
// (eth0, DHCP, strict reverse path, bogons dropped, inbound denied) and lan
// (eth1, 192.168.1.1/24 and fd00:53:1::1/64, anti-spoof to those prefixes,
// egress allowed; SSH, DNS and ping to the box from lan only). The caller owns
// the slice.
func Default() []byte {
	return append([]byte(nil), defaultPolicy...)
}
