// Package netconf configures the box's interfaces, routes and forwarding
// sysctls from a compiled policy, through rtnetlink.
//
// It is what `sluice run` calls before applying the firewall. The appliance
// has no ip or sysctl tool, so everything here is pure Go: links, addresses
// and routes go over an rtnetlink socket, sysctls are files under /proc/sys.
package netconf
