package bootstrap

// writeOnTmpfs is a script that writes standard input to the file "$1",
// 0600 root, in a directory that must be a tmpfs, so that what (a token,
// session credentials) never reaches a disk. The file is written beside
// its name and renamed into place: a reader never sees half of it.
func writeOnTmpfs(what string) string {
	return `set -eu
umask 077
d=$(dirname -- "$1")
mkdir -p -- "$d"
chmod 700 -- "$d"
case $(stat -f -c %T -- "$d") in
tmpfs|ramfs) ;;
*) echo "$d is not a tmpfs: refusing to write ` + what + ` to a disk" >&2; exit 1 ;;
esac
t=$(mktemp -- "$1.XXXXXX")
cat > "$t"
chown 0:0 -- "$t"
chmod 600 -- "$t"
mv -f -- "$t" "$1"`
}
