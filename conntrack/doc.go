// Package conntrack tracks connections in userspace and means what Linux's
// nf_conntrack means: a flow Linux calls new, established, related, invalid
// or expired, this table calls the same.
//
// It exists for the userspace engine, sluice replay and sluice explain,
// which see packets the kernel never tracked.
//
// # Table
//
// A flow is keyed by a Tuple: a 40-byte, pointer-free value (16-byte source
// and destination addresses, ports or ICMP echo id, protocol, family, zone).
// Both directions find one entry because the key is normalised: the endpoint
// with the lower (address, port) comes first, and the entry remembers
// whether its original direction was reversed to get there. One index slot
// per flow, one probe per packet, either direction. The normalised key is
// stored as five 64-bit words, compared word by word and hashed with three
// seeded 64x64->128-bit multiply-folds.
//
// The table is split into a power-of-two number of shards (1 to 64, chosen
// from Config.Max) by the top bits of a seeded hash of the key. A shard is
// an open-addressing index of uint32 words (an 8-bit hash tag and a 24-bit
// slot, linear probing, backward-shift deletion, grown at 3/4 load) over a
// slab of 128-byte entries allocated in chunks of 1,024. An entry is two
// cache lines holding all that a packet of an established flow reads and
// writes; the time a flow began, which such a packet never needs, is kept
// in an array beside the chunk's entries. Entries hold no pointers, so the
// garbage collector never scans them; a Track of an existing flow allocates
// nothing.
//
// # Locking
//
// Each shard has one mutex guarding its index, slab, free list and reap
// cursor. Track, Delete, Get and SetVerdict take exactly one shard lock;
// Range and Reap take shard locks one after another and never hold two.
// TrackBatch holds the locks of one group's shards together, taken in
// increasing shard index: that is the lock order, and as nothing else holds
// two locks there is no deadlock. The entry count is a single atomic shared
// by all shards (claimed with compare-and-swap, so Len never exceeds Max).
// The events channel is written with non-blocking sends while a shard lock
// is held; Range callbacks run with no lock held.
//
// # Batches
//
// At a million flows the index and the entries are far larger than the
// caches, and a packet of an established flow costs two dependent misses,
// each with its TLB miss: its index word, then its entry. Track takes them
// one after the other, packet after packet. TrackBatch takes packets in
// groups of 16: it computes every key and hash, locks the group's shards,
// loads every packet's index word, then follows every probe to the entry
// with the packet's tag and loads both of its cache lines, and only then
// tracks the packets in order, exactly as Track would. Go has no prefetch
// instruction, but loads that do not depend on each other overlap in the
// out-of-order core, so the group's misses are paid about once per phase,
// not once per packet. Following the probe matters: a quarter of the keys
// do not sit at their home position.
//
// The warming loads run under the shard locks, like every other read of a
// shard. Unlocked, they would race with a grow replacing the index (the
// race detector says so, and a torn slice header could read past the
// array); taking and dropping a lock around each load would serialise the
// misses again, as a locked instruction waits for the loads before it.
// Holding a group's locks through all phases costs one lock per shard of
// the group instead of one per packet, so a batch beats Track on a small
// table too. The clock is read once per TrackBatch call.
//
// # Bounds and expiry
//
// At Config.Max, a new flow first drops an entry early, as Linux's
// early_drop does: it scans up to 64 slots of its own shard from the reap
// cursor, takes an expired entry if it finds one, else the not-assured entry
// least recently seen. Assured entries are never dropped. When nothing can
// go the flow is refused (StateInvalid, ReasonTableFull, Stats.Refused).
//
// Expiry is amortised: every Track that creates a flow examines four slots
// at its shard's cursor and destroys what has expired there (an established
// packet examines none: a random slot would cost it a cache miss), and a
// lookup that finds an expired entry destroys it and starts afresh. There
// is no stop-the-world sweep; Reap(n) examines n slots on demand (tests,
// idle tables). An expired entry not yet reaped still counts in Len.
//
// # Timeouts
//
// Defaults are Linux's (DefaultTimeouts); each can be overridden in Config.
//
//	net.netfilter.nf_conntrack_tcp_timeout_syn_sent       120 s
//	net.netfilter.nf_conntrack_tcp_timeout_syn_recv        60 s
//	net.netfilter.nf_conntrack_tcp_timeout_established 432000 s
//	net.netfilter.nf_conntrack_tcp_timeout_fin_wait       120 s
//	net.netfilter.nf_conntrack_tcp_timeout_close_wait      60 s
//	net.netfilter.nf_conntrack_tcp_timeout_last_ack        30 s
//	net.netfilter.nf_conntrack_tcp_timeout_time_wait      120 s
//	net.netfilter.nf_conntrack_tcp_timeout_close           10 s
//	(no sysctl) SYN_SENT2                                 120 s
//	net.netfilter.nf_conntrack_tcp_timeout_unacknowledged 300 s
//	net.netfilter.nf_conntrack_udp_timeout                 30 s
//	net.netfilter.nf_conntrack_udp_timeout_stream         120 s (replied and older than 2 s: assured)
//	net.netfilter.nf_conntrack_icmp_timeout                30 s
//	net.netfilter.nf_conntrack_icmpv6_timeout              30 s
//
// # Protocols
//
// TCP follows nf_conntrack_proto_tcp: the tcp_conntracks transition table
// (NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK,
// TIME_WAIT, CLOSE, SYN_SENT2), its table of valid flag combinations, the
// simultaneous-open fix-up, reopening from TIME_WAIT or CLOSE, ignored
// segments (accepted, entry unchanged), the RST sequence check against the
// peer's highest ACK, the RST-before-reply kill, the unacknowledged-data
// timeout, ASSURED on an ACK after SYN_RECV, and tcp_in_window: a segment
// whose sequence is past the receiver's advertised window, or whose ACK
// acknowledges data not seen, is invalid.
//
// UDP is unreplied until a reply; a replied flow still active two seconds
// after it began is assured and gets udp_timeout_stream. ICMP and ICMPv6
// echo (and the other query types Linux tracks) open a flow keyed by
// identifier; a reply without a request is invalid. An ICMP error is
// Related when it quotes a tracked flow and invalid when it does not.
//
// # Deliberate differences from Linux
//
//   - New TCP flows open only on SYN, as with nf_conntrack_tcp_loose=0
//     (Linux defaults to 1 and picks up mid-stream connections).
//   - SACK blocks are not read: the window check uses the ACK field, as
//     Linux does when SACK was not permitted.
//   - Not implemented from nf_conntrack_tcp_packet: the retransmission
//     counter (nf_conntrack_tcp_max_retrans, timeout_max_retrans), the
//     zero-window timeout, RFC 5961 challenge-ACK detection in LAST_ACK,
//     re-synchronising on a SYN/ACK answering an ignored SYN, the
//     "RST in a train after data" exception, be_liberal, and the
//     nf_tcp_handle_invalid timeout shrink for out-of-window FIN/RST.
//   - ICMP echo flows are keyed by addresses and identifier, not also by
//     type: an echo request sent in the reply direction of a tracked echo
//     flow refreshes that flow instead of opening a second one.
//   - Early drop scans 64 slots of one shard (Linux: eight hash buckets)
//     and never drops an assured entry, where Linux also drops assured TCP
//     flows in closing states (tcp_can_early_drop).
//   - Fragments are not reassembled: Decode reports ReasonFragment (Linux
//     reassembles with nf_defrag before tracking). IPv6 extension headers
//     other than hop-by-hop, routing and destination options are
//     unsupported.
//   - Checksums are not verified (Linux: nf_conntrack_checksum=1 on
//     PREROUTING).
//   - Update events are sent when the TCP state, replied or assured changes,
//     not for every packet; events carry a copy of the entry.
//   - Per-direction packet counters are 32 bits (they wrap after 2^32
//     packets); byte counters are 64 bits like Linux's.
//   - There are no helpers, expectations, NAT or sequence adjustment.
package conntrack
