"""A device on the Azure IoT Python device SDK (azure-iot-device 2.14), run by the interoperability
tests with the SDK's own venv (harness.hub.sdk_venv), never imported by the harness.

Argument: a JSON file with gateway (where DPS and the hub are reached, port 8883), ca_pem, id_scope,
registration_id, key (base64) or x509 ({"cert_file": ..., "key_file": ...}: it signs in with that
client certificate), reported (a patch to send) and telemetry_hex (a message to send as a security
message; optional). It prints one JSON object a line: registered, twin, patched, sent, ready, then
method / c2d / desired as they come, until a line "quit" on its standard input; then done. With
"device_id" and "hostname" it skips DPS and connects as that device. Any failure prints error
(with the exception's type) and exits 1.
"""

import json
import sys
import threading
import traceback

from azure.iot.device import X509, IoTHubDeviceClient, Message, MethodResponse, ProvisioningDeviceClient

_out = threading.Lock()


def emit(event, **fields):
    with _out:
        print(json.dumps({"event": event, **fields}, default=str), flush=True)


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    gateway, ca, key = spec["gateway"], spec["ca_pem"], spec.get("key")
    cert = X509(spec["x509"]["cert_file"], spec["x509"]["key_file"]) if "x509" in spec else None
    if "device_id" in spec:
        hostname, device_id = spec["hostname"], spec["device_id"]
    else:
        where = {"provisioning_host": gateway, "registration_id": spec["registration_id"],
                 "id_scope": spec["id_scope"], "server_verification_cert": ca}
        prov = (ProvisioningDeviceClient.create_from_x509_certificate(x509=cert, **where) if cert
                else ProvisioningDeviceClient.create_from_symmetric_key(symmetric_key=key, **where))
        result = prov.register()
        state = result.registration_state
        emit("registered", status=result.status, hub=state.assigned_hub, device=state.device_id)
        hostname, device_id = state.assigned_hub, state.device_id

    where = {"hostname": hostname, "device_id": device_id, "gateway_hostname": gateway,
             "server_verification_cert": ca}
    client = (IoTHubDeviceClient.create_from_x509_certificate(x509=cert, **where) if cert
              else IoTHubDeviceClient.create_from_symmetric_key(symmetric_key=key, **where))

    def on_method(request):
        emit("method", name=request.name, payload=request.payload)
        client.send_method_response(MethodResponse.create_from_method_request(request, 200, {"echo": request.payload}))

    client.on_method_request_received = on_method
    client.on_message_received = lambda m: emit("c2d", data=m.data.decode(), properties=m.custom_properties)
    client.on_twin_desired_properties_patch_received = lambda patch: emit("desired", patch=patch)
    client.connect()
    emit("twin", twin=client.get_twin())
    client.patch_twin_reported_properties(spec["reported"])
    emit("patched")
    if "telemetry_hex" in spec:
        message = Message(bytes.fromhex(spec["telemetry_hex"]))
        message.set_as_security_message()
        message.custom_properties["mti"] = "2.3-1-0-0"
        client.send_message(message)
        emit("sent")
    emit("ready")
    for line in sys.stdin:
        if line.strip() == "quit":
            break
    client.shutdown()
    emit("done")


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except BaseException as exc:  # the test reads why
        emit("error", error=repr(exc), type=type(exc).__name__, trace=traceback.format_exc())
        sys.exit(1)
