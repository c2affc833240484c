import Foundation
public import GatewayProtocol
public import GatewayWorker
import SwiftProtobuf
import TextFormats

/// Answers `FindVPSByLease` (``RequestMethods/findVPSByLease``) from the environment's
/// inventory.
public struct FindVPSByLeaseHandler: MethodHandler {
    private let inventory: any Inventory
    private let onInventoryError: (@Sendable () -> Void)?

    /// - Parameter onInventoryError: told of every lookup the inventory could not answer
    ///   (unreachable, a failed query), for the worker's metrics.
    public init(inventory: any Inventory, onInventoryError: (@Sendable () -> Void)? = nil) {
        self.inventory = inventory
        self.onInventoryError = onInventoryError
    }

    public func handle(_ query: FindVPSByLeaseRequest, context: HandlerContext) async throws -> FindVPSByLeaseResponse {
        var mac: MACAddress?
        if !query.mac.isEmpty {
            guard let parsed = MACAddress(query.mac) else {
                throw HandlerError.invalidArgument("mac '\(query.mac.prefix(64))' is not a MAC address; expected \(MACAddress.expectedFormat)")
            }
            mac = parsed
        }
        let ip = query.ip.trimmingCharacters(in: .whitespaces)
        if !ip.isEmpty && !IPAddressText.isValid(ip) {
            throw HandlerError.invalidArgument("ip '\(ip.prefix(64))' is not an IP address; expected \(IPAddressText.expectedFormat)")
        }
        guard mac != nil || !ip.isEmpty else {
            throw HandlerError.invalidArgument("neither mac nor ip is set; expected at least one")
        }
        let found: LeaseOwner?
        do {
            found = try await inventory.owner(mac: mac, ip: ip.isEmpty ? nil : ip)
        } catch is CancellationError {
            throw CancellationError()
        } catch let error as InventoryError where error.code == .unavailable {
            onInventoryError?()
            // Not "not found": the gateway retries, and its journal keeps the request.
            throw HandlerError(.unavailable, error.message)
        } catch {
            onInventoryError?()
            throw error
        }
        guard let owner = found else {
            throw HandlerError.notFound("no VPS in environment '\(context.environment)' owns mac '\(mac?.canonical ?? "")' ip '\(ip)'")
        }
        return .with {
            $0.vpsID = owner.vpsID
            $0.organizationID = owner.organizationID
        }
    }
}
