"""The analyser's vocabulary: which programs, paths and patterns mean what.

Kept apart from :mod:`agentd.security.commands` (the walk over the parse tree) so that
each is short enough to read in one sitting; changing what counts as dangerous is
editing these tables.
"""

from __future__ import annotations

import re

__all__: list[str] = []

_SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "ash", "fish", "csh", "tcsh", "mksh"})
_INTERPRETERS = frozenset({"python", "python2", "python3", "perl", "ruby", "node", "php",
                           "nodejs", "lua", "pypy", "pypy3"})
_WRAPPERS = frozenset({"env", "sudo", "doas", "nohup", "timeout", "nice", "ionice", "command",
                       "exec", "builtin", "time", "stdbuf", "setsid", "xargs", "busybox",
                       "chroot", "unbuffer", "torsocks", "proxychains", "proxychains4",
                       "runuser", "watch", "strace", "ltrace", "flock", "caffeinate"})
# Options of wrappers that take a value, so the value is not taken for the command.
_WRAPPER_VALUE_OPTS: dict[str, frozenset[str]] = {
    "env": frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string"}),
    "sudo": frozenset({"-u", "-g", "-C", "-D", "-h", "-p", "-r", "-t", "-U", "-T",
                       "--user", "--group", "--chdir", "--prompt", "--host"}),
    "doas": frozenset({"-u", "-C"}),
    "timeout": frozenset({"-s", "--signal", "-k", "--kill-after"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "ionice": frozenset({"-c", "-n", "--class", "--classdata"}),
    "stdbuf": frozenset({"-i", "-o", "-e"}),
    "xargs": frozenset({"-I", "-i", "-n", "-P", "-L", "-l", "-s", "-d", "-E", "-e", "-a",
                        "--max-args", "--max-procs", "--delimiter", "--arg-file",
                        "--replace", "--max-lines", "--max-chars", "--eof"}),
    "runuser": frozenset({"-u", "-g", "-G", "--user", "--group"}),
    "watch": frozenset({"-n", "--interval", "-d", "--differences"}),
    "strace": frozenset({"-e", "-o", "-p", "-s", "-u"}),
    "ltrace": frozenset({"-e", "-o", "-p", "-s", "-u"}),
}
_NETWORK_TOOLS = frozenset({
    "curl", "wget", "nc", "ncat", "netcat", "socat", "telnet", "ftp", "tftp", "sftp", "ssh",
    "scp", "aria2c", "lynx", "w3m", "links", "http", "https", "xh", "nmap", "ping",
    "nslookup", "dig", "host", "whois", "sshpass", "ssh-copy-id", "lftp", "axel", "curlie",
    "torsocks", "proxychains", "proxychains4", "mosh", "rclone", "smbclient", "drill",
})
_PKG_INSTALL: dict[str, frozenset[str]] = {
    "pip": frozenset({"install", "download", "wheel"}),
    "pip3": frozenset({"install", "download", "wheel"}),
    "pipx": frozenset({"install", "run"}),
    "npm": frozenset({"install", "i", "add", "ci", "update", "exec", "publish"}),
    "npx": frozenset(),  # any use fetches a package
    "yarn": frozenset({"add", "install", "dlx"}),
    "pnpm": frozenset({"add", "install", "i", "dlx"}),
    "gem": frozenset({"install", "update"}),
    "cargo": frozenset({"install", "add"}),
    "go": frozenset({"get", "install"}),
    "apt": frozenset({"install", "update", "upgrade", "full-upgrade", "dist-upgrade"}),
    "apt-get": frozenset({"install", "update", "upgrade", "dist-upgrade", "source"}),
    "yum": frozenset({"install", "update", "upgrade"}),
    "dnf": frozenset({"install", "update", "upgrade"}),
    "apk": frozenset({"add", "update", "upgrade"}),
    "brew": frozenset({"install", "update", "upgrade", "tap"}),
    "pacman": frozenset({"-S", "-Sy", "-Syu", "-Syy"}),
    "zypper": frozenset({"install", "in", "update", "up"}),
    "conda": frozenset({"install", "update", "create"}),
    "uv": frozenset({"add", "pip", "tool"}),
    "poetry": frozenset({"add", "install", "update"}),
    "docker": frozenset({"pull", "push", "login"}),
    "podman": frozenset({"pull", "push", "login"}),
}
_GIT_NETWORK = frozenset({"clone", "fetch", "pull", "push", "ls-remote", "remote", "submodule"})
_POWER = frozenset({"shutdown", "reboot", "halt", "poweroff"})
_DISK_TOOLS = frozenset({"shred", "wipefs", "fdisk", "sfdisk", "parted", "mkswap",
                         "blkdiscard", "mke2fs", "sgdisk", "cfdisk", "truncate", "srm"})
_PRIV_TOOLS = frozenset({"sudo", "su", "doas", "pkexec", "sudoedit", "run0", "runuser",
                         "setcap", "nsenter", "unshare", "mount", "chroot", "insmod",
                         "modprobe", "rmmod", "capsh", "visudo", "useradd", "usermod",
                         "adduser", "passwd", "chpasswd", "groupadd", "gpasswd",
                         "iptables", "ip6tables", "nft", "ufw", "setenforce", "kexec"})
_PERSIST_TOOLS = frozenset({"launchctl", "at", "batch", "disown", "update-rc.d", "chkconfig",
                            "rc-update", "nohup", "setsid"})
_DECODERS = frozenset({"base64", "base32", "xxd", "uudecode", "openssl", "rev", "gunzip",
                       "zcat", "gzip", "bzip2", "xz", "tr"})
_ARCHIVERS = frozenset({"tar", "zip", "gzip", "bzip2", "xz", "7z", "base64", "xxd", "od",
                        "hexdump", "gpg", "openssl", "cpio"})
_SECRET_RE = re.compile(
    r"(^|/)\.ssh(/|$)|id_(rsa|dsa|ecdsa|ed25519)|/etc/(shadow|gshadow|sudoers|master\.passwd)"
    r"|(^|/)\.env(\.[\w.-]+)?$|\.aws/(credentials|config)|(^|/)\.netrc$|(^|/)\.pgpass$"
    r"|\.git-credentials|\.docker/config\.json|\.kube/config|(^|/)\.gnupg(/|$)"
    r"|(^|/)\.npmrc$|(^|/)\.pypirc$|/proc/(self|\d+|\*)/environ|\.bash_history|\.zsh_history"
    r"|\.config/gcloud|(^|/)\.azure(/|$)|\.pem$|\.key$|(^|/)credentials(\.json)?$"
    r"|(^|/)secrets?(\.\w+)?$|\.vault-token|(^|/)\.htpasswd$|/etc/passwd$",
)
_PERSIST_PATH_RE = re.compile(
    r"(^|/)\.(bashrc|bash_profile|bash_login|bash_logout|profile|zshrc|zprofile|zshenv"
    r"|zlogin|cshrc|tcshrc|kshrc|xinitrc|xprofile)$|\.ssh/(authorized_keys2?|rc|config)$"
    r"|^/etc/(cron|anacrontab)|^/var/spool/cron|^/etc/systemd/|\.config/systemd/"
    r"|^/(usr/)?lib/systemd/|^/etc/init\.d/|^/etc/rc\.local|^/etc/rc\d\.d/|^/etc/profile"
    r"|^/etc/bash\.bashrc|^/etc/environment|^/etc/ld\.so\.preload|\.git/hooks(/|$)"
    r"|\.config/autostart|Library/LaunchAgents|Library/LaunchDaemons|^/etc/update-motd\.d"
    r"|^/etc/xdg/autostart|\.config/fish/config\.fish",
)
_PRIV_PATH_RE = re.compile(r"^/etc/")
_DEVICE_RE = re.compile(
    r"^/dev/(sd|hd|vd|xvd|nvme|mmcblk|disk|rdisk|md|dm-|mapper/|loop|mem$|kmem$|port$)")
_SYSTEM_RE = re.compile(
    r"^/(bin|boot|dev|etc|home|lib|lib32|lib64|libx32|opt|proc|root|sbin|srv|sys|usr|var"
    r"|mnt|media|System|Library|Applications|Users|private)(/|$)")
_DANGEROUS_TARGET_RE = re.compile(r"^(/+\.?\*?|~/?\*?|\$\{?HOME\}?/?\*?|\.\.?/?\*?|\*|/\*)$")
_ESCAPE_RE = re.compile(r"\\x[0-9a-fA-F]{2}|\\[0-3][0-7]{2}|\\u[0-9a-fA-F]{4}")
_IFS_RE = re.compile(r"\$\{?IFS\}?")
_FORK_BOMB_RE = re.compile(r"(\S+)\s*\(\s*\)\s*\{\s*\1\s*\|\s*\1\s*&")
_DYNAMIC_PART_KINDS = frozenset({"parameter", "commandsubstitution", "processsubstitution"})
_PY_NET_RE = re.compile(
    r"\bsocket\b|urllib|\brequests\b|http\.client|httpx|aiohttp|IO::Socket|LWP|Net::HTTP"
    r"|open-uri|net/http|require\(['\"](https?|net|dgram)['\"]\)|\bfetch\(|TCPSocket"
    r"|fsockopen|file_get_contents\(['\"]https?:|ftplib|smtplib|paramiko")
_PY_OBF_RE = re.compile(
    r"\bexec\s*\(|\beval\s*\(|\bcompile\s*\(|b64decode|base64|__import__|marshal|codecs\."
    r"|\bchr\s*\(|fromhex|\\x[0-9a-fA-F]{2}|pack\(|unpack\(")
