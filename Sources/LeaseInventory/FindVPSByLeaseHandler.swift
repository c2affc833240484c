import Foundation
public import GatewayProtocol
public import GatewayWorker
import SwiftProtobuf
import TextFormats

/// Answers `FindVPSByLease` (``RequestMethods/findVPSByLease``) from the environment's
/// inventory.
public struct FindVPSByLeaseHandler: InstantMethodHandler {
    private let inventory: any Inventory
    private let onInventoryError: (@Sendable () -> Void)?

    /// - Parameter onInventoryError: told of every lookup the inventory could not answer
    ///   (unreachable, a failed query), for the worker's metrics.
    public init(inventory: any Inventory, onInventoryError: (@Sendable () -> Void)? = nil) {
        self.inventory = inventory
        self.onInventoryError = onInventoryError
    }

    public func handle(_ query: FindVPSByLeaseRequest, context: HandlerContext) async throws -> FindVPSByLeaseResponse {
        let (mac, ip) = try Self.lease(of: query)
        let found: LeaseOwner?
        do {
            found = try await inventory.owner(mac: mac, ip: ip)
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            throw inventoryFailure(error)
        }
        return try answer(found, mac: mac, ip: ip, context: context)
    }

    /// Only an inventory that can answer at once (SQLite) is asked at once.
    public var answersAtOnce: Bool { inventory.answersAtOnce }

    /// The lookup on the calling thread, when the inventory can answer it without waiting
    /// (a SQLite file no writer holds); nil sends the request to ``handle(_:context:)``.
    public func handleAtOnce(_ query: FindVPSByLeaseRequest, context: HandlerContext) throws -> FindVPSByLeaseResponse? {
        let (mac, ip) = try Self.lease(of: query)
        let found: AtOnce<LeaseOwner?>
        do {
            found = try inventory.ownerAtOnce(mac: mac, ip: ip)
        } catch {
            throw inventoryFailure(error)
        }
        guard case .answered(let owner) = found else { return nil }
        return try answer(owner, mac: mac, ip: ip, context: context)
    }

    /// The request's MAC and IP, checked: at least one, each well-formed.
    private static func lease(of query: FindVPSByLeaseRequest) throws -> (mac: MACAddress?, ip: String?) {
        var mac: MACAddress?
        if !query.mac.isEmpty {
            guard let parsed = MACAddress(query.mac) else {
                throw HandlerError.invalidArgument("mac '\(query.mac.prefix(64))' is not a MAC address; expected \(MACAddress.expectedFormat)")
            }
            mac = parsed
        }
        let ip = trimmingWhitespace(query.ip)
        if !ip.isEmpty && !IPAddressText.isValid(ip) {
            throw HandlerError.invalidArgument("ip '\(ip.prefix(64))' is not an IP address; expected \(IPAddressText.expectedFormat)")
        }
        guard mac != nil || !ip.isEmpty else {
            throw HandlerError.invalidArgument("neither mac nor ip is set; expected at least one")
        }
        return (mac, ip.isEmpty ? nil : ip)
    }

    /// `text.trimmingCharacters(in: .whitespaces)`, without building Foundation's character
    /// set for text with nothing to trim (most requests carry no IP, or a bare one): that was
    /// 3 % of a loaded worker's CPU.
    private static func trimmingWhitespace(_ text: String) -> String {
        guard let first = text.utf8.first, let last = text.utf8.last else { return text }
        // An ASCII byte other than space and tab is no whitespace; a non-ASCII one may be
        // (U+00A0, U+3000), which Foundation decides.
        func plain(_ byte: UInt8) -> Bool { byte < 0x80 && byte != 0x20 && byte != 0x09 }
        return plain(first) && plain(last) ? text : text.trimmingCharacters(in: .whitespaces)
    }

    /// An inventory that could not answer: `unavailable` when it cannot be reached (not "not
    /// found": the gateway retries, and its journal keeps the request), else the error as is.
    private func inventoryFailure(_ error: any Error) -> any Error {
        onInventoryError?()
        if let error = error as? InventoryError, error.code == .unavailable {
            return HandlerError(.unavailable, error.message)
        }
        return error
    }

    private func answer(_ found: LeaseOwner?, mac: MACAddress?, ip: String?, context: HandlerContext) throws -> FindVPSByLeaseResponse {
        guard let owner = found else {
            throw HandlerError.notFound("no VPS in environment '\(context.environment)' owns mac '\(mac?.canonical ?? "")' ip '\(ip ?? "")'")
        }
        return .with {
            $0.vpsID = owner.vpsID
            $0.organizationID = owner.organizationID
        }
    }
}
