package auth

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// RequireLoopback returns an error naming every listen address ("host:port")
// that is not a loopback address. An empty host (":8080") listens on every
// interface and is refused; "localhost" is accepted as the name the
// resolver maps to loopback. The program calls it in Mode "none" before it
// listens, so that a gateway without authentication is reachable from this
// machine only.
func RequireLoopback(addrs ...string) error {
	var errs []error
	for _, a := range addrs {
		if err := loopbackOnly(a); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err == nil && ip.Unmap().IsLoopback() {
		return nil
	}
	if host == "" {
		host = "all interfaces"
	}
	return fmt.Errorf("listen address %q (%s) is not loopback: without authentication (-auth none) listen on 127.0.0.1 or [::1] only", addr, host)
}
