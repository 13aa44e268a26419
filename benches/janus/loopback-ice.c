/* LD_PRELOAD shim for Janus: makes the loopback interface usable for ICE.
 *
 * Janus 1.1.2 (ice.c, janus_ice_setup_local) walks getifaddrs() and skips every entry with
 * IFF_LOOPBACK before it looks at ice_enforce_list, so "lo"/"127.0.0.1" can never be enforced;
 * with nothing added, libnice falls back to its own gathering, which skips loopback too and
 * offers the machine's other addresses (even IPv6 ones when Janus's ipv6 is off). No Janus
 * setting changes that. This wrapper clears IFF_LOOPBACK in what getifaddrs() returns to the
 * Janus process only, so that ice_enforce_list = "lo" yields exactly one host candidate,
 * 127.0.0.1, and libnice binds its sockets there.
 *
 * Built by start-janus.sh: cc -shared -fPIC -O2 -o DIR/libloopback_ice.so loopback-ice.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stddef.h>

int getifaddrs(struct ifaddrs **ifap) {
	static int (*real_getifaddrs)(struct ifaddrs **) = NULL;
	if(real_getifaddrs == NULL)
		real_getifaddrs = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
	if(real_getifaddrs == NULL)
		return -1;
	int res = real_getifaddrs(ifap);
	if(res == 0) {
		for(struct ifaddrs *ifa = *ifap; ifa != NULL; ifa = ifa->ifa_next)
			ifa->ifa_flags &= ~IFF_LOOPBACK;
	}
	return res;
}
