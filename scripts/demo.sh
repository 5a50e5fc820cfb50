#!/usr/bin/env bash
# The main job, end to end on this machine: a local PostgreSQL cluster with webhook_ext
# preloaded, `cliente` and `tarefa` tables with triggers, a local receiver that verifies
# X-Webhook-Signature, inserts/updates/deletes, and the delivery table. Leaves nothing running.
#   bash scripts/demo.sh            # Debian's PostgreSQL 15
#   bash scripts/demo.sh --pg 18    # 16, 17 or 18 (scripts/setup.sh's builds under /opt/webhook_ext/pg)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
if [ "${1:-}" = --pg ]; then
  case "${2:-}" in
    15) ;;
    16 | 17 | 18) PG_CONFIG="${WEBHOOK_EXT_PG_ROOT:-/opt/webhook_ext/pg}/$2/bin/pg_config" ;;
    *) echo "demo: --pg takes 15, 16, 17 or 18" >&2; exit 2 ;;
  esac
fi
DEMO_DIR=/tmp/webhook_ext_demo
PORT="${DEMO_PORT:-54329}"

bash scripts/setup.sh
PG_BIN=$("$PG_CONFIG" --bindir)
MAJOR=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
echo "== building and installing webhook_ext into PostgreSQL $MAJOR, building the receiver"
cargo pgrx install --pg-config "$PG_CONFIG" >/dev/null
cargo build -q -p webhook_listen
LISTEN=target/debug/webhook-listen

as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
listener_pid=""
cleanup() {
  [ -n "$listener_pid" ] && kill "$listener_pid" 2>/dev/null || true
  as_postgres "$PG_BIN/pg_ctl" -D "$DEMO_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$DEMO_DIR"
}
trap cleanup EXIT

echo "== starting PostgreSQL $MAJOR on port $PORT with webhook_ext preloaded"
rm -rf "$DEMO_DIR"; mkdir -p "$DEMO_DIR"; chmod 777 "$DEMO_DIR"
as_postgres "$PG_BIN/initdb" -D "$DEMO_DIR/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
cat >> "$DEMO_DIR/data/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DEMO_DIR'
shared_preload_libraries = 'webhook_ext'
webhook.allowed_networks = '127.0.0.1/32'   # the demo receiver is local
webhook.retry_schedule = '0s,2s,5s'         # compressed for the demo
CONF
as_postgres "$PG_BIN/pg_ctl" -D "$DEMO_DIR/data" -l "$DEMO_DIR/server.log" -w start >/dev/null
PSQL=("$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)

echo "== starting the receiver (verifies X-Webhook-Signature; answers 500 to the first request to show a retry)"
export DEMO_SECRET="whsec_$(head -c 24 /dev/urandom | base64)"
"$LISTEN" --port 0 --secret-env DEMO_SECRET --fail-first 1 --fail-status 500 > "$DEMO_DIR/receiver.log" 2>&1 &
listener_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$DEMO_DIR/receiver.log" 2>/dev/null && break; sleep 0.1; done
RECEIVER_URL=$(grep -o 'http://127.0.0.1:[0-9]*' "$DEMO_DIR/receiver.log" | head -1)
echo "receiver at $RECEIVER_URL"

echo "== schema, triggers and a webhook"
"${PSQL[@]}" -v url="$RECEIVER_URL" -v secret="$DEMO_SECRET" <<'SQL'
CREATE EXTENSION webhook_ext;

CREATE TABLE cliente (
    id serial PRIMARY KEY,
    nome text NOT NULL,
    email text,
    cidade text,
    criado_em timestamptz DEFAULT now()
);
CREATE TRIGGER cliente_webhook AFTER INSERT OR UPDATE OR DELETE ON cliente
    FOR EACH ROW EXECUTE FUNCTION webhook_trigger('cliente.criado', 'cliente.atualizado', 'cliente.excluido');

CREATE TABLE tarefa (
    id serial PRIMARY KEY,
    cliente_id int REFERENCES cliente (id),
    titulo text NOT NULL,
    status text NOT NULL DEFAULT 'ABERTA'
);
CREATE TRIGGER tarefa_criada AFTER INSERT ON tarefa
    FOR EACH ROW EXECUTE FUNCTION webhook_trigger('tarefa.criada', 'tarefa.atualizada', 'tarefa.excluida');
CREATE TRIGGER tarefa_concluida AFTER UPDATE ON tarefa
    FOR EACH ROW WHEN (NEW.status = 'CONCLUIDA' AND OLD.status IS DISTINCT FROM 'CONCLUIDA')
    EXECUTE FUNCTION webhook_trigger('tarefa.criada', 'tarefa.concluida', 'tarefa.excluida');

SELECT id, url, events FROM webhook_create(:'url', :'secret', '{cliente.*,tarefa.*}', 'demo receiver');
SQL

echo "== application writes"
"${PSQL[@]}" <<'SQL'
INSERT INTO cliente (nome, email, cidade) VALUES ('Maria Conceição', 'maria@example.com', 'São Paulo');
INSERT INTO cliente (nome, email, cidade) VALUES ('João Araújo', 'joao@example.com', 'Recife');
UPDATE cliente SET email = 'maria@novo.com.br' WHERE nome = 'Maria Conceição';
INSERT INTO tarefa (cliente_id, titulo) VALUES (1, 'Enviar proposta');
UPDATE tarefa SET status = 'CONCLUIDA' WHERE id = 1;
DELETE FROM cliente WHERE nome = 'João Araújo';
BEGIN;
INSERT INTO cliente (nome) VALUES ('Rolled back: never sent');
ROLLBACK;
SQL

echo "== waiting for every delivery to finish"
for _ in $(seq 300); do
  left=$("${PSQL[@]}" -At -c "SELECT count(*) FROM webhook_delivery WHERE status IN ('pending','delivering')")
  [ "$left" = "0" ] && break
  sleep 0.1
done

echo
echo "== what the receiver saw"
cat "$DEMO_DIR/receiver.log"
echo
echo "== webhook_delivery"
"${PSQL[@]}" -c "SELECT id, event, status, attempts, response_status, left(error, 40) AS error FROM webhook_delivery ORDER BY id"
echo "== webhook_attempt"
"${PSQL[@]}" -c "SELECT delivery_id, attempt, response_status, duration_ms FROM webhook_attempt ORDER BY id"
echo "== webhook_stats"
"${PSQL[@]}" -c "SELECT webhook_id, deliveries_total, deliveries_succeeded, retries, success_rate FROM webhook_stats"
echo "demo finished: cluster stopped, receiver stopped, $DEMO_DIR removed"
