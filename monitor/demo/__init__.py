"""The demo site: a small, deterministic capture that makes avmon raise alerts.

``python -m monitor.demo.generate`` writes ``monitor/data/demo.pcap`` and its ground truth
``monitor/data/demo.json`` (every flow with client, server, name, indicator, vendor,
segment, whether it should alert and why; every DNS transaction). The capture is taken at
the site's egress, on the internal side of the firewall and proxy.

Network plan
------------

=========================  ==================  ===================================
segment                    addresses           classification
=========================  ==================  ===================================
secret-enclave             10.20.0.0/16,       SECRET (workstations 10.20.1.10,
                           fd00:20::/48        10.20.1.11; fd00:20::10)
official                   10.30.0.0/16        OFFICIAL (workstation 10.30.5.20)
guest                      192.168.100.0/24    unclassified (laptop 192.168.100.50)
=========================  ==================  ===================================

Infrastructure (no segment): DNS resolver 10.0.0.53 and fd00::53, explicit web proxy
10.0.0.8:3128, NTP server 10.0.0.123, gateways 10.20.0.1 and 10.30.0.1.

External addresses and what the bundled geo data says about them: Kaspersky
77.74.176.61, 77.74.177.233, 77.74.178.20, 77.74.179.5, 77.74.180.10 (AS200107, geolocation
RU and registration RU in dbip-country and geo-whois-asn-country); ESET 91.228.167.21
(AS50881, SK/SK); Microsoft 20.42.65.92 (AS8075, US/US); Fastly 151.101.64.144 (www.gov.uk,
CA/US); Google 142.250.185.78 (US/US).

Flows and the expected outcome (flag RU; rules for SECRET and OFFICIAL)
----------------------------------------------------------------------

Alert, SECRET host 10.20.1.10 (Kaspersky is RU-controlled, its servers are in RU):

1. DNS ``ksn-file-geo.kaspersky-labs.com`` (CNAME chain of two) -> 77.74.177.233, then TLS
   with that SNI and a 256 KiB client-to-server upload: a sample upload whose volume should
   escalate the severity.
2. DNS ``s07.upd.kaspersky.com`` (CNAME) -> 77.74.178.20, TLS with that SNI, a 128 KiB
   download (update).
3. DNS ``ksn-url-geo.kaspersky-labs.com`` -> 77.74.179.5, then QUIC version 1 to it; the
   ClientHello spans two Initial packets.
4. DNS ``dc1.ksn.kaspersky-labs.com`` (CNAME) -> 77.74.176.61, then TLS *without* SNI to
   77.74.176.61: only the DNS cache can name this flow.
5. TCP to the proxy 10.0.0.8:3128: ``CONNECT ds.kaspersky.com:443``, ``200 Connection
   established``, then a TLS ClientHello with SNI ``ds.kaspersky.com`` inside the tunnel.
   The destination is internal, so only the vendor basis gives a jurisdiction.

No alert, SECRET host 10.20.1.11: TLS to ``update.eset.com`` (ESET, SK) at 91.228.167.21
and to ``wdcp.microsoft.com`` (Microsoft Defender, US) at 20.42.65.92.

Alert at a lower severity: OFFICIAL host 10.30.5.20, TLS to
``ksn-verdict-geo.kaspersky-labs.com`` at 77.74.180.10.

No alert: guest 192.168.100.50, TLS to ``ksn-url-geo.kaspersky-labs.com`` at 77.74.179.5
(recognised as Kaspersky, but the segment is unclassified).

Noise, never alerting: ARP for the gateway, NTP, an ICMP echo, DNS for ``www.bbc.co.uk``,
an IPv6 AAAA query for ``www.gov.uk`` from fd00:20::10, TLS to ``www.gov.uk`` from the
OFFICIAL host, and QUIC version 2 to ``www.google.com`` from the guest.

DNS lookups of Kaspersky names go to the internal resolver; they name the later flows but
are not themselves connections to a flagged endpoint.
"""

__all__: list[str] = []
