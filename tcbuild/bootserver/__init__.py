"""The boot server's daemons, one module per service: ISC dhcpd (`isc`), Kea, dnsmasq, rsyslog,
NFS (exports and Ganesha), tftpd-hpa; `files` names every file `server-config` writes."""
