// Public: the message constructors take and give Foundation dates.
public import Foundation
import SwiftProtobuf

/// The `type` field of a ``GatewayMessage``. The first five are the existing platform's;
/// `cancel` and `drain` are our extensions, which an old peer ignores as unknown types.
public enum MessageType: String, Sendable, CaseIterable {
    /// Client → gateway, the first message of a stream.
    case register
    /// Gateway → client, the acknowledgement of `register`.
    case registered
    /// Both ways, every heartbeat interval.
    case heartbeat
    /// Gateway → client.
    case request
    /// Client → gateway.
    case response
    /// Gateway → client: the request in `request.request_id` is no longer needed.
    case cancel
    /// Either side: send me no new requests.
    case drain
}

extension GatewayMessage {
    /// The parsed `type`, or nil for a type this build does not know.
    public var messageType: MessageType? { MessageType(rawValue: self.type) }

    public static func register(_ registration: GatewayRegistration) -> Self {
        .with {
            $0.type = MessageType.register.rawValue
            $0.registration = registration
        }
    }

    public static var registered: Self { .with { $0.type = MessageType.registered.rawValue } }

    public static func heartbeat(at date: Date = Date()) -> Self {
        .with {
            $0.type = MessageType.heartbeat.rawValue
            $0.heartbeat = .init(date: date)
        }
    }

    public static func request(_ request: GatewayRequest) -> Self {
        .with {
            $0.type = MessageType.request.rawValue
            $0.request = request
        }
    }

    public static func response(_ response: GatewayResponse) -> Self {
        .with {
            $0.type = MessageType.response.rawValue
            $0.response = response
        }
    }

    public static func cancel(requestID: String) -> Self {
        .with {
            $0.type = MessageType.cancel.rawValue
            $0.request.requestID = requestID
        }
    }

    public static var drain: Self { .with { $0.type = MessageType.drain.rawValue } }
}
