#!/usr/bin/env bash
# A cluster in a box: K "nodes" made of Linux namespaces on one machine, for multi-node MPI tests.
#
#   .ci/netns-cluster.sh check                       can namespaces be made here? exit 0, or 1 with the reason
#   .ci/netns-cluster.sh up K DIR [--owner PID]      make the head and nodes n1..nK; state goes to DIR
#   .ci/netns-cluster.sh on DIR NODE PROGRAM [ARGS]  run PROGRAM (exact argv) on NODE (head, n1, ...), here (cwd)
#   .ci/netns-cluster.sh kill DIR NODE               lose NODE: kill -9 every process on it; its local disk is gone
#   .ci/netns-cluster.sh down DIR                    kill every process of the cluster, delete its namespaces
#   DIR/nodeshell NODE CMD...                        the ssh stand-in: like `ssh NODE CMD...` (words joined, bash -c)
#
# Each node (and the head, where mpirun runs: a login node holding no ranks) has
#   - its own network namespace, with lo and eth0 = SUBNET.(10+i)/24 (the head: SUBNET.1), joined to the others by
#     a bridge that lives in a namespace of its own: no interface, address or route of the machine's is touched;
#   - its own hostname (UTS namespace) and /etc/hosts naming head and n1..nK (mount namespace, bind mount);
#   - its own node-local disk: a tmpfs on LOCAL (the same path on every node, a different tmpfs on each, empty on the
#     machine itself) and another on /dev/shm. They vanish with the node, like a real node's local disk.
# A node is held by one `sleep` process whose namespaces every command on the node enters (nsenter): namespaces are
# made once per node, so successive jobs on a node share its hostname and local disk. TMPDIR is LOCAL on the nodes.
# Everything else is the machine's: the file system (the store of a test lives there, shared as on a real cluster),
# users, PIDs.
#
# `up` writes to DIR: hostfile (nK slots=SLOTS lines), hosts, nodeshell, mpirun-args (one option a line, for
# mpirun: hostfile, ssh agent, TCP on the subnet, no binding), env (the same as MCA environment variables, to source),
# prefix (the namespaces' name prefix), pids/NODE. Open MPI 5 (PRRTE) runs across the nodes with:
#   .ci/netns-cluster.sh on DIR head mpirun -n 8 $(cat DIR/mpirun-args) python app.py
# With --owner PID, a watcher in the background runs `down DIR` as soon as PID is gone (a killed test run leaves
# nothing behind). `down` is idempotent and also works when DIR has been deleted, given the prefix: down - PREFIX.
#
# Commands through nodeshell (and so PRRTE's daemons and the ranks they start) inherit the caller's environment and
# directory, unless CLUSTER_LOGIN_ENV=1 is set where nodeshell runs (mpirun's environment): then they get what ssh
# gives, a login environment (HOME, USER, a system PATH, TMPDIR) in the home directory.
#
# Settings (environment): CLUSTER_SUBNET (first three octets, default 10.77.0), CLUSTER_SLOTS (slots per node in the
# hostfile, default 4), CLUSTER_LOCAL_MB (size of each node's local tmpfs, default 256), CLUSTER_BTL (Open MPI's
# transports, default tcp,self: TCP within a node too; tcp,sm,self adds shared memory within a node, which works:
# each node has its own /dev/shm).
# Needs root, iproute2 (ip netns), util-linux (unshare, nsenter) and a kernel with veth and bridge.
set -Eeuo pipefail

SELF=$(readlink -f "$0")
SUBNET=${CLUSTER_SUBNET:-10.77.0}
SLOTS=${CLUSTER_SLOTS:-4}
LOCAL_MB=${CLUSTER_LOCAL_MB:-256}
BTL=${CLUSTER_BTL:-tcp,self}

UP_DIR="" # set while `up` runs: a failure then takes down what was made
die() {
  echo "netns-cluster.sh: $*" >&2
  if [ -n "$UP_DIR" ]; then
    local d=$UP_DIR
    UP_DIR=""
    down "$d" >/dev/null 2>&1 || true
  fi
  exit 1
}

check() { # prints nothing and returns 0 when namespaces can be made, else prints the reason
  [ "$(id -u)" = 0 ] || { echo "not root (network namespaces need root)"; return 1; }
  local t
  for t in ip unshare nsenter mount; do command -v "$t" >/dev/null || { echo "no '$t' command"; return 1; }; done
  local probe="cmpi-probe-$$" err
  if ! err=$(ip netns add "$probe" 2>&1); then
    echo "ip netns add failed: $err"
    return 1
  fi
  if ! err=$(ip -n "$probe" link add br0 type bridge 2>&1 && ip -n "$probe" link add va type veth peer name vb 2>&1 &&
    ip netns exec "$probe" unshare --uts --mount true 2>&1); then
    ip netns del "$probe" 2>/dev/null || true
    echo "no bridge, veth or UTS/mount namespace: $err"
    return 1
  fi
  ip netns del "$probe"
}

node_names() { # node_names K: head n1 .. nK
  local i
  echo head
  for ((i = 1; i <= $1; i++)); do echo "n$i"; done
}

address() { # address NODE
  if [ "$1" = head ]; then echo "$SUBNET.1"; else echo "$SUBNET.$((10 + ${1#n}))"; fi
}

up() {
  local k=$1 dir=$2 owner=${3:-}
  [[ $k =~ ^[0-9]+$ ]] && [ "$k" -ge 1 ] && [ "$k" -le 200 ] || die "up K DIR: K must be 1..200, not '$k'"
  local reason
  reason=$(check) || die "cannot make namespaces here: $reason"
  mkdir -p "$dir/pids"
  dir=$(readlink -f "$dir")
  [ ! -e "$dir/prefix" ] || die "$dir already holds a cluster ($(cat "$dir/prefix")); run down first"
  # a short prefix (interface and socket path limits); the local mount point is short for PMIx's socket paths
  local prefix
  prefix="cmpi$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
  echo "$prefix" >"$dir/prefix"
  local local_dir="/tmp/$prefix"
  echo "$local_dir" >"$dir/local"
  mkdir -p "$local_dir"
  UP_DIR=$dir
  trap 'die "up failed at line $LINENO; took down what was made"' ERR
  local nodes
  nodes=$(node_names "$k")

  {
    echo "127.0.0.1 localhost"
    local n
    for n in $nodes; do echo "$(address "$n") $n"; done
  } >"$dir/hosts"
  for ((i = 1; i <= k; i++)); do echo "n$i slots=$SLOTS"; done >"$dir/hostfile"

  ip netns add "$prefix-br"
  ip -n "$prefix-br" link add br0 type bridge forward_delay 0 stp_state 0
  ip -n "$prefix-br" link set br0 up
  local n ns
  for n in $nodes; do
    ns="$prefix-$n"
    ip netns add "$ns"
    ip -n "$prefix-br" link add "v$n" type veth peer name eth0 netns "$ns"
    ip -n "$prefix-br" link set "v$n" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$(address "$n")/24" dev eth0
    ip -n "$ns" link set eth0 up
    # the node's holder: sets the hostname and mounts once, then sleeps; its namespaces are the node's
    rm -f "$dir/pids/$n"
    setsid ip netns exec "$ns" unshare --uts --mount --propagation private bash -c '
      set -e
      hostname "$1"
      mount -t tmpfs -o "size=$2m,mode=1777" "node-local-$1" "$3"
      mount -t tmpfs -o "size=$2m,mode=1777" "shm-$1" /dev/shm
      mount --bind "$4/hosts" /etc/hosts
      echo $$ >"$4/pids/$1.tmp" && mv "$4/pids/$1.tmp" "$4/pids/$1"
      exec sleep infinity' holder "$n" "$LOCAL_MB" "$local_dir" "$dir" </dev/null >/dev/null 2>&1 &
  done
  local waited=0
  for n in $nodes; do
    while [ ! -s "$dir/pids/$n" ]; do
      sleep 0.05
      waited=$((waited + 1))
      [ "$waited" -lt 600 ] || die "node $n did not come up within 30 s"
    done
  done

  local agent="$dir/nodeshell"
  cat >"$agent" <<EOF
#!/usr/bin/env bash
# ssh stand-in for PRRTE's plm_ssh_agent: nodeshell NODE CMD... runs CMD on NODE of the cluster in $dir
# as ssh does: the words of CMD joined by spaces, run by a shell (bash -c).
exec "$SELF" shell "$dir" "\$@"
EOF
  chmod +x "$agent"
  local cidr="$SUBNET.0/24"
  printf '%s\n' --hostfile "$dir/hostfile" --bind-to none --prtemca plm_ssh_agent "$agent" \
    --mca btl "$BTL" --mca btl_tcp_if_include "$cidr" --prtemca oob_tcp_if_include "$cidr" >"$dir/mpirun-args"
  cat >"$dir/env" <<EOF
export CLUSTER_DIR=$dir
export PRTE_MCA_plm_ssh_agent=$agent
export PRTE_MCA_oob_tcp_if_include=$cidr
export PRTE_MCA_hwloc_default_binding_policy=none
export OMPI_MCA_btl=$BTL
export OMPI_MCA_btl_tcp_if_include=$cidr
EOF
  trap - ERR
  UP_DIR=""
  if [ -n "$owner" ]; then # the watcher: takes the cluster down when its owner is gone
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [ -e "$2/prefix" ]; do sleep 0.5; done
      [ -e "$2/prefix" ] && exec "$3" down "$2"' watcher "$owner" "$dir" "$SELF" </dev/null >/dev/null 2>&1 &
    echo $! >"$dir/watcher"
  fi
  echo "cluster $prefix: $(echo "$nodes" | tr '\n' ' ')on $SUBNET.0/24; state in $dir"
}

enter() { # enter DIR NODE: ENTER=(the command line that runs a program on NODE)
  local dir=$1 node=$2 pid tmp
  pid=$(cat "$dir/pids/$node" 2>/dev/null) || die "no node '$node' in $dir (nodes: $(ls "$dir/pids" | tr '\n' ' '))"
  [ -d "/proc/$pid" ] || die "node '$node' of $dir is down (its holder $pid is gone)"
  tmp=$(cat "$dir/local")
  ENTER=(nsenter --target "$pid" --net --uts --mount)
  if [ -n "${CLUSTER_LOGIN_ENV:-}" ]; then # as after ssh: a login environment, in the home directory
    ENTER+=(--wd="$HOME" env -i HOME="$HOME" USER="$(id -un)" LOGNAME="$(id -un)" SHELL=/bin/bash
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TMPDIR="$tmp")
  else
    ENTER+=(--wd="$PWD" env TMPDIR="$tmp")
  fi
}

on() { # on DIR NODE PROGRAM ARGS...: exact argv, the caller's environment and directory
  [ $# -ge 3 ] || die "on DIR NODE PROGRAM [ARGS...]"
  CLUSTER_LOGIN_ENV="" enter "$1" "$2"
  shift 2
  exec "${ENTER[@]}" "$@"
}

shell() { # shell DIR NODE WORDS...: as ssh does
  [ $# -ge 3 ] || die "nodeshell NODE CMD..."
  enter "$1" "$2"
  shift 2
  # Not exec: like the ssh client, this process stays on the calling side (outside the node) while CMD runs, so
  # that a node lost under it shows as ssh shows it, exit status 255, not as a daemon killed by a signal (which
  # PRRTE reports as "Daemon exit status: 0" and then ends mpirun with 0). A command that exits on a signal
  # (status 128+N here) gives 255 too, as with ssh.
  local rc=0
  "${ENTER[@]}" bash -c "$*" || rc=$?
  if [ "$rc" -gt 128 ]; then rc=255; fi
  exit "$rc"
}

lose() { # lose DIR NODE: every process of the node, the holder last (so the node's tmpfs goes with it)
  local dir=$1 node=$2 prefix pids tries
  prefix=$(cat "$dir/prefix" 2>/dev/null) || die "no cluster in $dir"
  [ -e "$dir/pids/$node" ] || die "no node '$node' in $dir"
  for tries in 1 2 3 4 5 6 7 8 9 10; do
    pids=$(ip netns pids "$prefix-$node" 2>/dev/null | tr '\n' ' ')
    [ -n "${pids// /}" ] || break
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.1
  done
  rm -f "$dir/pids/$node"
}

down() { # down DIR, or down - PREFIX
  local dir=$1 prefix=${2:-}
  if [ -z "$prefix" ]; then
    [ -e "$dir/prefix" ] || return 0 # nothing up (or already down)
    prefix=$(cat "$dir/prefix")
  fi
  [[ $prefix =~ ^cmpi[0-9a-f]{6}$ ]] || die "down: '$prefix' is not a cluster prefix"
  local spaces ns pids tries
  spaces=$(ip netns list | awk -v p="$prefix-" 'index($1, p) == 1 {print $1}')
  for tries in 1 2 3 4 5 6 7 8 9 10; do
    pids=""
    for ns in $spaces; do pids="$pids $(ip netns pids "$ns" 2>/dev/null | tr '\n' ' ')"; done
    [ -n "${pids// /}" ] || break
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    sleep 0.2
  done
  for ns in $spaces; do ip netns del "$ns" 2>/dev/null || true; done
  rmdir "/tmp/$prefix" 2>/dev/null || true
  if [ "$dir" != - ] && [ -d "$dir" ]; then
    local w
    w=$(cat "$dir/watcher" 2>/dev/null || true)
    rm -f "$dir/prefix" "$dir/watcher"
    if [ -n "$w" ] && [ "$w" != "$$" ] && [ "$w" != "$PPID" ]; then kill "$w" 2>/dev/null || true; fi
  fi
  local left
  left=$(ip netns list | awk -v p="$prefix-" 'index($1, p) == 1 {print $1}')
  [ -z "$left" ] || die "down: namespaces left: $left"
}

case "${1:-}" in
check)
  reason=$(check) || die "$reason"
  ;;
up)
  [ $# -ge 3 ] || die "usage: up K DIR [--owner PID]"
  owner=""
  if [ "${4:-}" = --owner ]; then owner=${5:?--owner needs a PID}; fi
  up "$2" "$3" "$owner"
  ;;
on) shift && on "$@" ;;
kill)
  [ $# -eq 3 ] || die "usage: kill DIR NODE"
  lose "$2" "$3"
  ;;
shell) shift && shell "$@" ;;
down)
  [ $# -ge 2 ] || die "usage: down DIR | down - PREFIX"
  down "$2" "${3:-}"
  ;;
*)
  sed -n '2,9p' "$SELF" >&2
  exit 2
  ;;
esac
