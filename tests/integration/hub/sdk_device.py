"""A device on the Azure IoT Python device SDK (azure-iot-device 2.14), run by the interoperability
tests with the SDK's own venv (harness.hub.sdk_venv), never imported by the harness.

Argument: a JSON file with gateway (where DPS and the hub are reached, port 8883), ca_pem, id_scope,
registration_id, key (base64), reported (a patch to send) and telemetry_hex (a message to send as a
security message). It prints one JSON object a line: registered, twin, patched, sent, ready, then
method / c2d / desired as they come, until a line "quit" on its standard input; then done. Any
failure prints error and exits 1.
"""

import json
import sys
import threading
import traceback

from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse, ProvisioningDeviceClient

_out = threading.Lock()


def emit(event, **fields):
    with _out:
        print(json.dumps({"event": event, **fields}, default=str), flush=True)


def main(spec_path):
    with open(spec_path) as f:
        spec = json.load(f)
    gateway, ca, key = spec["gateway"], spec["ca_pem"], spec["key"]
    prov = ProvisioningDeviceClient.create_from_symmetric_key(
        provisioning_host=gateway, registration_id=spec["registration_id"], id_scope=spec["id_scope"],
        symmetric_key=key, server_verification_cert=ca)
    result = prov.register()
    state = result.registration_state
    emit("registered", status=result.status, hub=state.assigned_hub, device=state.device_id)

    client = IoTHubDeviceClient.create_from_symmetric_key(
        symmetric_key=key, hostname=state.assigned_hub, device_id=state.device_id, gateway_hostname=gateway,
        server_verification_cert=ca)

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
        emit("error", error=repr(exc), trace=traceback.format_exc())
        sys.exit(1)
