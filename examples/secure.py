"""CURVE encryption, an allowed-clients list and per-caller authorisation. Run: python examples/secure.py

Everything in one process for the example's sake; in real use each side only
holds its own secret key and the other side's public key (see README, "Security").
"""
import zrpc


class Vault:
    def __init__(self, admins):
        self.admins = set(admins)

    def whoami(self) -> str:
        call = zrpc.current_call()  # works in the method's own greenlet
        return f"{call.peer_address} {'admin' if call.user_id in self.admins else 'user'}"

    def secret(self) -> str:
        if zrpc.current_call().user_id not in self.admins:
            raise PermissionError("admins only")
        return "42"


def main() -> None:
    server_public, server_secret = zrpc.curve_keypair()
    admin_public, admin_secret = zrpc.curve_keypair()
    user_public, user_secret = zrpc.curve_keypair()
    stranger_public, stranger_secret = zrpc.curve_keypair()

    vault = Vault(admins=[admin_public.decode()])
    with zrpc.Server(vault, curve_secret_key=server_secret, curve_clients=[admin_public, user_public],
                     allow_ips=["127.0.0.0/8", "::1"]) as server:
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()
        with zrpc.Client(endpoint, curve_server_key=server_public, curve_secret_key=admin_secret,
                         timeout=10) as admin:
            print("admin:", admin.whoami(), admin.secret())
        with zrpc.Client(endpoint, curve_server_key=server_public, curve_secret_key=user_secret,
                         timeout=10) as user:
            try:
                user.secret()
            except zrpc.RemoteError as exc:
                print("user:", user.whoami(), "->", exc)
        with zrpc.Client(endpoint, curve_server_key=server_public, curve_secret_key=stranger_secret,
                         timeout=10) as stranger:
            try:
                stranger.whoami()
            except zrpc.AuthenticationFailed:
                print("stranger: refused")


if __name__ == "__main__":
    main()
